//! List paging: `pageSize`, `pageToken` → `nextPageToken`.
//!
//! A page token carries an offset and a digest of the list it belongs to (parent, filter,
//! caller: whatever the API passes as `context`), nothing else. The server re-evaluates the
//! request — authorization included — on every page, so a forged or replayed token can at most
//! move within a list the caller may read; a token for another list, or edited bytes, is
//! `INVALID_ARGUMENT`. Tokens need no server secret, so they survive restarts and work across
//! replicas.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::ApiError;

const VERSION: u8 = 1;
const DIGEST: usize = 12;

/// Where one page starts and how long it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Items to skip.
    pub offset: usize,
    /// Items to return at most.
    pub size: usize,
    context: String,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The page's items.
    pub items: Vec<T>,
    /// The token for the next page, if there is one.
    pub next_page_token: Option<String>,
    /// The list's length before paging.
    pub total: usize,
}

fn digest(context: &str) -> [u8; DIGEST] {
    let full = Sha256::digest(context.as_bytes());
    let mut out = [0u8; DIGEST];
    out.copy_from_slice(&full[..DIGEST]);
    out
}

impl PageRequest {
    /// Reads `pageSize` (absent or 0: `max`; larger values are capped at `max`) and
    /// `pageToken` for the list named by `context`.
    pub fn parse(
        page_size: Option<&str>,
        page_token: Option<&str>,
        context: &str,
        max: usize,
    ) -> Result<Self, ApiError> {
        let size = match page_size {
            Some(s) => s
                .parse::<usize>()
                .map_err(|_| ApiError::invalid_argument(format!("Invalid pageSize: {s}")))?,
            None => max,
        };
        let size = if size == 0 { max } else { size.min(max) };
        let offset = match page_token.filter(|t| !t.is_empty()) {
            Some(t) => decode(t, context)
                .ok_or_else(|| ApiError::invalid_argument("Invalid page token."))?,
            None => 0,
        };
        Ok(Self {
            offset,
            size,
            context: context.to_owned(),
        })
    }

    /// This request's page of `items`.
    pub fn page<T>(&self, items: Vec<T>) -> Page<T> {
        let total = items.len();
        let end = self.offset.saturating_add(self.size);
        let next_page_token = (end < total).then(|| encode(end, &self.context));
        let items = items
            .into_iter()
            .skip(self.offset)
            .take(self.size)
            .collect();
        Page {
            items,
            next_page_token,
            total,
        }
    }
}

fn encode(offset: usize, context: &str) -> String {
    let mut raw = Vec::with_capacity(1 + 8 + DIGEST);
    raw.push(VERSION);
    raw.extend_from_slice(&(offset as u64).to_be_bytes());
    raw.extend_from_slice(&digest(context));
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode(token: &str, context: &str) -> Option<usize> {
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    if raw.len() != 1 + 8 + DIGEST || raw[0] != VERSION {
        return None;
    }
    let offset = u64::from_be_bytes(raw[1..9].try_into().ok()?);
    (raw[9..] == digest(context)).then_some(usize::try_from(offset).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(context: &str, size: &str) -> Vec<Vec<u32>> {
        let items: Vec<u32> = (0..7).collect();
        let mut token: Option<String> = None;
        let mut pages = Vec::new();
        loop {
            let req = PageRequest::parse(Some(size), token.as_deref(), context, 100).unwrap();
            let page = req.page(items.clone());
            assert_eq!(page.total, 7);
            pages.push(page.items);
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => return pages,
            }
        }
    }

    #[test]
    fn pages_cover_the_list_once() {
        assert_eq!(
            walk("projects/p/secrets", "3"),
            vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]
        );
        assert_eq!(walk("x", "0"), vec![(0..7).collect::<Vec<_>>()]);
        assert_eq!(walk("x", "7"), vec![(0..7).collect::<Vec<_>>()]);
        let capped = PageRequest::parse(Some("999999"), None, "x", 25).unwrap();
        assert_eq!(capped.size, 25);
    }

    #[test]
    fn forged_and_foreign_tokens_are_refused() {
        let req = PageRequest::parse(Some("2"), None, "projects/a/secrets|user:a", 100).unwrap();
        let token = req
            .page((0..10).collect::<Vec<u8>>())
            .next_page_token
            .unwrap();
        // Valid for its own list.
        let own = PageRequest::parse(None, Some(&token), "projects/a/secrets|user:a", 100);
        assert_eq!(own.map(|r| r.offset).ok(), Some(2));
        // Another list (another parent, another caller) rejects it.
        for context in ["projects/b/secrets|user:a", "projects/a/secrets|user:b"] {
            assert!(PageRequest::parse(None, Some(&token), context, 100).is_err());
        }
        // An edited offset only moves within the same list (past its end here: an empty page).
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        raw[8] = 200;
        let moved = URL_SAFE_NO_PAD.encode(&raw);
        let req = PageRequest::parse(None, Some(&moved), "projects/a/secrets|user:a", 100).unwrap();
        assert!(req.page((0..10).collect::<Vec<u8>>()).items.is_empty());
        // An edited digest, the old guessable format, and garbage are all refused.
        raw[12] ^= 1;
        let edited = URL_SAFE_NO_PAD.encode(raw);
        let legacy = URL_SAFE_NO_PAD.encode("offset:5");
        for bad in [edited.as_str(), legacy.as_str(), "!!", "AAAA"] {
            let e = PageRequest::parse(None, Some(bad), "projects/a/secrets|user:a", 100);
            assert_eq!(
                e.err().map(|e| e.message().to_owned()).as_deref(),
                Some("Invalid page token.")
            );
        }
        assert!(PageRequest::parse(Some("-1"), None, "x", 10).is_err());
        assert!(PageRequest::parse(Some("ten"), None, "x", 10).is_err());
    }
}
