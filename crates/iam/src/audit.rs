//! The audit log: every decision is queued (bounded) and written in batches off the request
//! path; identical decisions in one batch become one row with their count.

use std::collections::HashMap;
use std::time::Duration;

use gatehouse_store::AuditRecord;

use crate::{Iam, Inner, Principal, Result};

/// Decisions waiting for the audit writer at most; more wait for it.
pub(crate) const AUDIT_QUEUE: usize = 65_536;
/// Decisions written per batch at most.
const AUDIT_BATCH: usize = 8_192;

impl Iam {
    /// Queues a decision for the audit log; when the writer falls behind by a full queue,
    /// decisions wait for it (nothing is dropped, memory stays bounded).
    pub(crate) async fn audit(
        &self,
        principal: &Principal,
        permission: &str,
        resource: &str,
        allowed: bool,
    ) {
        let who = principal.member();
        tracing::info!(target: "gatehouse::audit", principal = %who, permission, resource, allowed, "access decision");
        self.inner
            .audit_pending
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let record = AuditRecord {
            at: self.now_ms(),
            principal: who,
            permission: permission.to_owned(),
            resource: resource.to_owned(),
            allowed,
            count: 1,
        };
        if self.inner.audit.send(record).await.is_err() {
            self.inner
                .audit_pending
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Waits until every decision made so far is in the store.
    pub async fn flush_audit(&self) {
        loop {
            let notified = self.inner.audit_flushed.notified();
            if self
                .inner
                .audit_pending
                .load(std::sync::atomic::Ordering::SeqCst)
                == 0
            {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    /// The newest audit records, newest first.
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditRecord>> {
        self.flush_audit().await;
        Ok(self.inner.store.audit(limit).await?)
    }
}

/// Writes audit records in batches, off the request path. Identical decisions in one batch
/// become one row with their count.
pub(crate) async fn audit_writer(
    inner: std::sync::Weak<Inner>,
    mut rx: tokio::sync::mpsc::Receiver<AuditRecord>,
) {
    let mut batch = Vec::with_capacity(AUDIT_BATCH);
    while rx.recv_many(&mut batch, AUDIT_BATCH).await > 0 {
        let Some(inner) = inner.upgrade() else { return };
        let n = batch.len() as u64;
        let mut rows: Vec<AuditRecord> = Vec::new();
        let mut index: HashMap<(String, String, String, bool), usize> = HashMap::new();
        for r in batch.drain(..) {
            let key = (
                r.principal.clone(),
                r.permission.clone(),
                r.resource.clone(),
                r.allowed,
            );
            match index.get(&key) {
                Some(&i) => rows[i].count += r.count,
                None => {
                    index.insert(key, rows.len());
                    rows.push(r);
                }
            }
        }
        if let Err(e) = inner.store.insert_audit(&rows).await {
            tracing::error!(error = %e, records = n, "audit log write failed");
        }
        inner
            .audit_pending
            .fetch_sub(n, std::sync::atomic::Ordering::SeqCst);
        inner.audit_flushed.notify_waiters();
    }
}
