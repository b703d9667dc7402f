//! The page: counts, the leader message, the five most recent votes, the sign-in button and
//! the vote buttons, with the sample's texts and element ids; and the dates as the Node
//! sample prints them (JavaScript's `Date.prototype.toString()` in UTC).

use std::fmt::Write as _;

/// A vote as listed on the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentVote {
    pub candidate: String,
    pub time_ms: i64,
}

/// What the page shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tally {
    pub cats: i64,
    pub dogs: i64,
    pub recent: Vec<RecentVote>,
}

/// What the page needs to load the sign-in client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub api_key: String,
    /// The identity server's base URL (its hosted sign-in page and client).
    pub auth_url: String,
    pub project_id: String,
}

/// The leading team (`CATS`, `DOGS` or empty) and the sample's message.
pub fn leader(cats: i64, dogs: i64) -> (&'static str, String) {
    if cats == dogs {
        return ("", "CATS and DOGS are evenly matched!".into());
    }
    let (team, diff) = if cats > dogs {
        ("CATS", cats - dogs)
    } else {
        ("DOGS", dogs - cats)
    };
    let s = if diff > 1 { "s" } else { "" };
    (team, format!("{team} are winning by {diff} vote{s}."))
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Year, month (1-12), day from days since 1970-01-01 (proleptic Gregorian).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

struct Parts {
    year: i64,
    month: u32,
    day: u32,
    weekday: usize,
    h: i64,
    m: i64,
    s: i64,
    ms: i64,
}

fn parts(ms: i64) -> Parts {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil(days);
    Parts {
        year,
        month,
        day,
        weekday: days.rem_euclid(7) as usize,
        h: in_day / 3_600_000,
        m: in_day / 60_000 % 60,
        s: in_day / 1000 % 60,
        ms: in_day % 1000,
    }
}

/// `Wed May 01 2024 12:34:56 GMT+0000 (Coordinated Universal Time)`.
pub fn js_date(ms: i64) -> String {
    let p = parts(ms);
    format!(
        "{} {} {:02} {:04} {:02}:{:02}:{:02} GMT+0000 (Coordinated Universal Time)",
        DAYS[p.weekday],
        MONTHS[(p.month - 1) as usize],
        p.day,
        p.year,
        p.h,
        p.m,
        p.s
    )
}

/// `2024-05-01T12:34:56.789Z` (JavaScript's `toISOString()`).
pub fn iso8601(ms: i64) -> String {
    let p = parts(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        p.year, p.month, p.day, p.h, p.m, p.s, p.ms
    )
}

/// Text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `/config.js`: the sample's `config` object, for the sign-in client.
pub fn config_js(c: &ClientConfig) -> String {
    let config = serde_json::json!({
        "apiKey": c.api_key,
        "authUrl": c.auth_url,
        "authDomain": c.auth_url.split("://").nth(1).unwrap_or(&c.auth_url),
        "projectId": c.project_id,
    });
    format!("const config = {config};\n")
}

const STYLE: &str = r#"
body{margin:0;font-family:Roboto,system-ui,-apple-system,"Segoe UI",sans-serif;color:rgba(0,0,0,.87);background:#fafafa}
nav{background:#ee6e73;color:#fff;height:64px;display:flex;align-items:center;justify-content:space-between;padding:0 24px;box-shadow:0 2px 4px rgba(0,0,0,.2)}
nav a.brand-logo{color:#fff;font-size:2.1rem;text-decoration:none}
.btn{background:#26a69a;color:#fff;border:0;border-radius:2px;padding:0 16px;height:36px;font-size:14px;text-transform:uppercase;letter-spacing:.5px;cursor:pointer;box-shadow:0 2px 2px rgba(0,0,0,.14)}
.btn:hover{background:#2bbbad}
.container{max-width:960px;margin:0 auto;padding:0 16px}
.section{padding:16px 0}
.center{text-align:center}
.row{display:flex;gap:24px;justify-content:center;flex-wrap:wrap}
.card-panel{background:#fff;padding:24px;margin:8px 0;border-radius:2px;box-shadow:0 2px 2px rgba(0,0,0,.14),0 1px 5px rgba(0,0,0,.12);min-width:260px;text-align:center}
.teal.lighten-4{background:#b2dfdb}
.material-icons{font-style:normal;font-family:"Noto Color Emoji","Apple Color Emoji","Segoe UI Emoji",sans-serif}
.material-icons.large{font-size:6rem;line-height:1}
h3{font-weight:400;font-size:2.5rem;margin:1rem 0}
h4{font-weight:400;font-size:2rem;margin:1rem 0}
.collection{list-style:none;padding:0;border:1px solid #e0e0e0;border-radius:2px}
.collection-item{background:#fff;border-bottom:1px solid #e0e0e0;padding:10px 20px;display:flex;align-items:center;gap:16px;text-align:left}
.collection-item p{margin:4px 0 0;color:#757575}
.circle{font-style:normal;border-radius:50%;width:42px;height:42px;display:inline-flex;align-items:center;justify-content:center;background:#4db6ac}
#status{min-height:1.5em;margin:16px auto;max-width:960px;padding:0 16px;text-align:center}
#status.ok{color:#00695c}
#status.error{color:#c62828;font-weight:500}
"#;

fn card(out: &mut String, team: &str, icon: &str, count: i64, lead: &str, button: &str) {
    let class = if lead == team {
        "card-panel teal lighten-4"
    } else {
        "card-panel"
    };
    let id = if team == "CATS" {
        "catsCard"
    } else {
        "dogsCard"
    };
    let _ = write!(
        out,
        "<div class=\"{class}\" id=\"{id}\">\n<i class=\"material-icons large\">{icon}</i>\n<h3>{count} votes</h3>\n<button class=\"btn\" id=\"{button}\">Vote for {team}</button>\n</div>\n"
    );
}

/// The whole page.
pub fn render(t: &Tally, client: Option<&ClientConfig>) -> String {
    let (lead, message) = leader(t.cats, t.dogs);
    let mut out = String::with_capacity(4096);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>CATS v DOGS</title>\n");
    out.push_str("<link rel=\"icon\" href=\"data:image/svg+xml,<svg xmlns=%22http://www.w3.org/2000/svg%22 viewBox=%220 0 100 100%22><text y=%22.9em%22 font-size=%2290%22>🐱</text></svg>\">\n<style>");
    out.push_str(STYLE);
    out.push_str("</style>\n</head>\n<body>\n<nav><a href=\"/\" class=\"brand-logo\">CATS v DOGS</a>\n<button class=\"btn\" id=\"signInButton\">Sign In</button></nav>\n");
    out.push_str("<div id=\"status\" role=\"status\"></div>\n<div class=\"section\" id=\"form\">\n<div class=\"container center\">\n");
    let _ = write!(
        out,
        "<h4 id=\"leader\">{}</h4>\n<div class=\"row\">\n",
        escape(&message)
    );
    card(&mut out, "CATS", "🐱", t.cats, lead, "voteCats");
    card(&mut out, "DOGS", "🐶", t.dogs, lead, "voteDogs");
    out.push_str("</div>\n<h4 class=\"header center\">Recent Votes</h4>\n<ul class=\"container collection center\" id=\"recentVotes\">\n");
    for v in &t.recent {
        let candidate = v.candidate.trim();
        let icon = if candidate == "CATS" { "🐱" } else { "🐶" };
        let _ = write!(
            out,
            "<li class=\"collection-item avatar\">\n<i class=\"material-icons circle teal lighten-1\">{icon}</i>\n<div><span class=\"title\">A vote for </span><b>{}</b>\n<p>was cast at {}</p></div>\n</li>\n",
            escape(candidate),
            js_date(v.time_ms)
        );
    }
    out.push_str("</ul>\n</div>\n</div>\n");
    if let Some(c) = client {
        let _ = writeln!(
            out,
            "<script src=\"{}/__/auth/client.js\"></script>",
            escape(c.auth_url.trim_end_matches('/'))
        );
    }
    out.push_str("<script src=\"/config.js\"></script>\n<script src=\"/app.js\"></script>\n</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_messages() {
        assert_eq!(leader(0, 0).1, "CATS and DOGS are evenly matched!");
        assert_eq!(leader(2, 1), ("CATS", "CATS are winning by 1 vote.".into()));
        assert_eq!(
            leader(1, 4),
            ("DOGS", "DOGS are winning by 3 votes.".into())
        );
    }

    #[test]
    fn javascript_dates() {
        // 2024-05-01T12:34:56.789Z was a Wednesday.
        let ms = 1_714_566_896_789;
        assert_eq!(
            js_date(ms),
            "Wed May 01 2024 12:34:56 GMT+0000 (Coordinated Universal Time)"
        );
        assert_eq!(iso8601(ms), "2024-05-01T12:34:56.789Z");
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            js_date(951_782_400_000),
            "Tue Feb 29 2000 00:00:00 GMT+0000 (Coordinated Universal Time)"
        );
    }

    #[test]
    fn the_sample_page() {
        // The sample's unit test renders 1 vs 100 and looks for the DOGS count.
        let html = render(
            &Tally {
                cats: 1,
                dogs: 100,
                recent: vec![RecentVote {
                    candidate: "DOGS  ".into(),
                    time_ms: 0,
                }],
            },
            None,
        );
        assert!(html.contains("<h3>100 votes</h3>"));
        assert!(html.contains("<title>CATS v DOGS</title>"));
        assert!(html.contains("DOGS are winning by 99 votes."));
        assert!(html.contains("<div class=\"card-panel teal lighten-4\" id=\"dogsCard\">\n<i class=\"material-icons large\">🐶</i>"));
        assert!(html.contains("<b>DOGS</b>\n<p>was cast at Thu Jan 01 1970 00:00:00 GMT+0000 (Coordinated Universal Time)</p>"));
        assert!(escape("<b>\"x\"&'").eq("&lt;b&gt;&quot;x&quot;&amp;&#39;"));
    }
}
