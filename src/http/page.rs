//! What the block page says: one self-contained HTML document (no external
//! assets, no script), or the same facts as JSON.
//!
//! The page follows the NHS service manual's restraint: plain English,
//! one column, large text, the NHS blue for the header and links, a visible
//! focus ring; it reads on a phone (viewport meta, fluid width) and with a
//! screen reader (landmarks, headings in order, `lang`). Everything taken
//! from the request or the configuration is escaped.

use serde::Serialize;

use crate::policy::Alternative;

/// The facts about a blocked name.
#[derive(Debug, Clone, Serialize)]
pub struct BlockedFacts<'a> {
    pub name: &'a str,
    pub blocked: bool,
    pub category: &'a str,
    pub list: &'a str,
    pub reason: Option<&'a str>,
    pub alternatives: Vec<AlternativeJson<'a>>,
    pub contact: Option<&'a str>,
    pub reference: &'a str,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlternativeJson<'a> {
    pub name: &'a str,
    pub url: Option<&'a str>,
}

impl<'a> AlternativeJson<'a> {
    pub fn from(a: &'a Alternative) -> Self {
        Self {
            name: &a.name,
            url: a.url.as_deref(),
        }
    }
}

/// `{"name": ..., "blocked": false}`
#[derive(Debug, Clone, Serialize)]
pub struct NotBlocked<'a> {
    pub name: &'a str,
    pub blocked: bool,
}

/// Text made safe for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

const STYLE: &str = "\
*{box-sizing:border-box}\
body{margin:0;background:#f0f4f5;color:#212b32;font-family:Arial,Helvetica,sans-serif;font-size:1.1875rem;line-height:1.5}\
header{background:#005eb8;color:#fff;padding:1rem 0}\
header p{margin:0 auto;max-width:40rem;padding:0 1rem;font-weight:bold;font-size:1.25rem}\
main{margin:1.5rem auto;max-width:40rem;padding:0 1rem}\
.card{background:#fff;border-top:4px solid #da291c;padding:1.25rem 1.5rem;margin-bottom:1.5rem}\
.card.neutral{border-top-color:#005eb8}\
h1{font-size:2rem;line-height:1.2;margin:0 0 1rem}\
h2{font-size:1.375rem;margin:1.5rem 0 .5rem}\
p,ul{margin:0 0 1rem}\
.name{font-weight:bold;word-break:break-all}\
a{color:#005eb8}\
a:visited{color:#330072}\
a:focus{outline:4px solid transparent;background:#ffeb3b;color:#212b32;box-shadow:0 -2px #ffeb3b,0 4px #212b32;text-decoration:none}\
.ref{font-family:Consolas,Menlo,monospace;font-weight:bold;background:#f0f4f5;padding:.1rem .3rem;white-space:nowrap}\
footer{margin:0 auto 2rem;max-width:40rem;padding:0 1rem;font-size:1rem;color:#4c6272}\
@media (max-width:40rem){body{font-size:1rem}h1{font-size:1.6rem}}";

fn document(title: &str, organisation: Option<&str>, main: &str, footer: &str) -> String {
    let org = organisation.map(escape);
    let title = match &org {
        Some(o) => format!("{} - {o}", escape(title)),
        None => escape(title),
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en-GB\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n\
         <body>\n<header><p>{}</p></header>\n<main id=\"main\">\n{main}</main>\n<footer><p>{footer}</p></footer>\n</body>\n</html>\n",
        org.as_deref().unwrap_or("Network access policy")
    )
}

/// The 403 page for a blocked name.
pub fn blocked_html(f: &BlockedFacts<'_>, organisation: Option<&str>) -> String {
    let mut main = String::new();
    main.push_str("<div class=\"card\">\n<h1>This website is blocked</h1>\n");
    main.push_str(&format!(
        "<p>You tried to open <span class=\"name\">{}</span>. It is blocked on this network.</p>\n",
        escape(f.name)
    ));
    main.push_str("<h2>Why</h2>\n");
    match f.reason {
        Some(r) => main.push_str(&format!("<p>{}</p>\n", escape(r))),
        None => main.push_str(&format!(
            "<p>It is on a list of sites this organisation does not allow (category: {}).</p>\n",
            escape(f.category)
        )),
    }
    if !f.alternatives.is_empty() {
        main.push_str("<h2>What to use instead</h2>\n<ul>\n");
        for a in &f.alternatives {
            match a.url {
                Some(u) => main.push_str(&format!(
                    "<li><a href=\"{}\">{}</a></li>\n",
                    escape(u),
                    escape(a.name)
                )),
                None => main.push_str(&format!("<li>{}</li>\n", escape(a.name))),
            }
        }
        main.push_str("</ul>\n");
    }
    main.push_str("<h2>If you need this website for your work</h2>\n");
    match f.contact {
        Some(c) => main.push_str(&format!("<p>Contact {}.</p>\n", escape(c))),
        None => main.push_str("<p>Contact your IT service desk.</p>\n"),
    }
    main.push_str(&format!(
        "<p>Quote this reference: <span class=\"ref\">{}</span></p>\n</div>\n",
        escape(f.reference)
    ));
    let footer = format!(
        "Blocked by the category {}, list {}.",
        escape(f.category),
        escape(f.list)
    );
    document(
        &format!("Blocked: {}", f.name),
        organisation,
        &main,
        &footer,
    )
}

/// The 404 page for a name that is not blocked: neutral, no accusation.
pub fn not_blocked_html(name: &str, organisation: Option<&str>) -> String {
    let main = format!(
        "<div class=\"card neutral\">\n<h1>Nothing is blocked here</h1>\n\
         <p><span class=\"name\">{}</span> is not blocked on this network.</p>\n\
         <p>If the website does not load, the cause is elsewhere: try again later, or contact your IT service desk.</p>\n</div>\n",
        escape(name)
    );
    document(
        "Not blocked",
        organisation,
        &main,
        "This page is shown by the network's DNS service.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_from_outside_is_escaped() {
        let alternatives = [Alternative {
            name: "<b>Teams</b>".into(),
            url: Some("https://t.example/?a=1&b=\"2\"".into()),
        }];
        let f = BlockedFacts {
            name: "x<script>alert(1)</script>.test",
            blocked: true,
            category: "c\"><img src=x>",
            list: "l'",
            reason: Some("<i>no</i>"),
            alternatives: alternatives.iter().map(AlternativeJson::from).collect(),
            contact: Some("IG & Co <ig@example.nhs.uk>"),
            reference: "R-1",
        };
        let html = blocked_html(&f, Some("Trust <NHS>"));
        for bad in ["<script>", "<img", "<b>", "<i>", "\"2\"", "<ig@", "<NHS>"] {
            assert!(!html.contains(bad), "{bad} unescaped in\n{html}");
        }
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("href=\"https://t.example/?a=1&amp;b=&quot;2&quot;\""));
        assert!(!not_blocked_html("<script>x", None).contains("<script>x"));
    }
}
