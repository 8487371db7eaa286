//! The dashboard's pages: one layout (head, navigation, sign-out, the confirmation dialog) around each
//! page's own markup (`pages/*.html`). Pages hold no data: the page's script fills them from the
//! account and admin APIs, inserting text only as text. The one value a page is given is its
//! session's CSRF token.

use super::assets;

/// Which listener's dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The public listener's: an account's keys, limits and usage.
    Account,
    /// The admin listener's: accounts, prices, nodes, metrics.
    Admin,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Admin => "admin",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Account => "Account",
            Self::Admin => "Admin",
        }
    }
}

/// A page behind the sign-in.
#[derive(Debug)]
pub struct Page {
    pub path: &'static str,
    /// What the script knows the page by (`data-page`).
    pub id: &'static str,
    /// Its heading and its link's text.
    pub title: &'static str,
    /// Whether it draws charts (loads Chart.js).
    pub charts: bool,
    body: &'static str,
}

pub const ACCOUNT_PAGES: [Page; 4] = [
    Page {
        path: "/dashboard",
        id: "overview",
        title: "Overview",
        charts: true,
        body: include_str!("pages/overview.html"),
    },
    Page {
        path: "/dashboard/keys",
        id: "keys",
        title: "Managed keys",
        charts: false,
        body: include_str!("pages/keys.html"),
    },
    Page {
        path: "/dashboard/management",
        id: "management",
        title: "Management and child keys",
        charts: false,
        body: include_str!("pages/management.html"),
    },
    Page {
        path: "/dashboard/usage",
        id: "usage",
        title: "Usage",
        charts: true,
        body: include_str!("pages/usage.html"),
    },
];

pub const ADMIN_PAGES: [Page; 4] = [
    Page {
        path: "/dashboard",
        id: "admin-overview",
        title: "Overview",
        charts: false,
        body: include_str!("pages/admin-overview.html"),
    },
    Page {
        path: "/dashboard/accounts",
        id: "admin-accounts",
        title: "Accounts",
        charts: false,
        body: include_str!("pages/admin-accounts.html"),
    },
    Page {
        path: "/dashboard/models",
        id: "admin-models",
        title: "Models and prices",
        charts: false,
        body: include_str!("pages/admin-models.html"),
    },
    Page {
        path: "/dashboard/nodes",
        id: "admin-nodes",
        title: "Upstream nodes",
        charts: false,
        body: include_str!("pages/admin-nodes.html"),
    },
];

pub const SIGN_IN_PATH: &str = "/dashboard/sign-in";
/// The account side's self-serve sign-up, when `[signup]` is enabled.
pub const SIGN_UP_PATH: &str = "/dashboard/sign-up";

/// The pages of `side`.
pub fn pages(side: Side) -> &'static [Page] {
    match side {
        Side::Account => &ACCOUNT_PAGES,
        Side::Admin => &ADMIN_PAGES,
    }
}

/// `page` of `side`, for a signed-in session whose CSRF token is `csrf`.
pub fn render(side: Side, page: &Page, csrf: &str) -> String {
    let mut nav = String::new();
    for p in pages(side) {
        let current = if p.path == page.path { r#" aria-current="page""# } else { "" };
        nav.push_str(&format!(r#"<li><a href="{}"{current}>{}</a></li>"#, p.path, p.title));
    }
    let header = format!(
        r#"<header class="top">
  <p class="brand">gonka-gateway <span class="side">{side}</span></p>
  <nav aria-label="Dashboard"><ul>{nav}</ul></nav>
  <form id="sign-out" action="/dashboard/sign-out" method="post"><button type="submit" class="secondary">Sign out</button></form>
</header>"#,
        side = side.title(),
    );
    layout(side, page.id, page.title, page.charts, csrf, &header, page.body)
}

fn plain_header(side: Side) -> String {
    format!(
        r#"<header class="top"><p class="brand">gonka-gateway <span class="side">{}</span></p></header>"#,
        side.title()
    )
}

/// The sign-in page of `side`; `sign_up`: it links to the sign-up page.
pub fn render_sign_in(side: Side, sign_up: bool) -> String {
    let mut body = include_str!("pages/sign-in.html").to_owned();
    if sign_up {
        body.push_str(&format!(r#"<p>No account yet? <a href="{SIGN_UP_PATH}">Sign up</a>.</p>"#));
    }
    layout(side, "sign-in", "Sign in", false, "", &plain_header(side), &body)
}

/// The account side's sign-up page.
pub fn render_sign_up() -> String {
    let side = Side::Account;
    layout(side, "sign-up", "Sign up", false, "", &plain_header(side), include_str!("pages/sign-up.html"))
}

fn layout(side: Side, id: &str, title: &str, charts: bool, csrf: &str, header: &str, body: &str) -> String {
    let v = assets::version();
    let chart = if charts {
        format!(r#"<script src="/dashboard/assets/chart.umd.min.js?v={v}" defer></script>"#)
    } else {
        String::new()
    };
    format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}">
<title>{title} · gonka-gateway {side_title}</title>
<link rel="stylesheet" href="/dashboard/assets/dashboard.css?v={v}">
{chart}
<script src="/dashboard/assets/dashboard.js?v={v}" defer></script>
</head>
<body data-page="{id}" data-side="{side}">
<a class="skip" href="#main">Skip to content</a>
{header}
<main id="main" tabindex="-1">
<h1>{title}</h1>
<p id="status" class="status" role="status" aria-live="polite"></p>
{body}
</main>
<dialog id="confirm" aria-labelledby="confirm-title" aria-describedby="confirm-text">
  <form method="dialog">
    <h2 id="confirm-title"></h2>
    <p id="confirm-text"></p>
    <div class="buttons">
      <button value="cancel" class="secondary">Cancel</button>
      <button value="ok" id="confirm-ok"></button>
    </div>
  </form>
</dialog>
</body>
</html>
"##,
        side = side.as_str(),
        side_title = side.title(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_link_each_other_and_carry_no_inline_script() {
        for side in [Side::Account, Side::Admin] {
            for page in pages(side) {
                let html = render(side, page, "c0ffee");
                assert!(html.contains(r#"<meta name="csrf-token" content="c0ffee">"#));
                assert!(
                    html.contains(&format!(r#"<a href="{}" aria-current="page">"#, page.path)),
                    "{}",
                    page.id
                );
                for other in pages(side) {
                    assert!(html.contains(&format!(r#"href="{}""#, other.path)));
                }
                // The CSP allows no inline script or style: none may be written.
                assert_eq!(html.matches("<script").count(), html.matches("<script src=").count());
                assert!(!html.contains(" style=") && !html.contains("<style"));
                let handler = html.split(" on").skip(1).any(|rest| {
                    let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
                    !name.is_empty() && rest[name.len()..].starts_with('=')
                });
                assert!(!handler, "an inline event handler in {}", page.id);
                assert_eq!(html.contains("chart.umd.min.js"), page.charts);
            }
        }
        assert!(render_sign_in(Side::Admin, false).contains(r#"data-page="sign-in" data-side="admin""#));
        assert!(render_sign_in(Side::Account, true).contains(r#"href="/dashboard/sign-up""#));
        assert!(!render_sign_in(Side::Account, false).contains("sign-up"));
        assert!(render_sign_up().contains(r#"data-page="sign-up" data-side="account""#));
    }
}
