//! The debug view's HTML primitives: escaping and the page frame every page is drawn in.

use axum::response::Html;

/// `&`, `<`, `>`, `"` and `'` as entities: safe in element content and in quoted attributes.
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

/// A whole page. `body_attributes` and `main` must already be escaped.
pub fn page(title: &str, body_attributes: &str, header_extra: &str, main: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title} · Wharf debug view</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/debug/assets/debug.css">
</head>
<body{body_attributes}>
<header class="bar">
<a class="brand" href="/debug/">Wharf <span>debug view</span></a>
{header_extra}
</header>
<main>
{main}
</main>
<script src="/debug/assets/debug.js"></script>
</body>
</html>
"#,
        title = escape(title),
    ))
}
