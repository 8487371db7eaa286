//! The dashboard's static files, embedded in the binary: its script and style sheet, and Chart.js
//! (4.6.1, MIT, vendored unmodified with its licence beside it in `assets/`).
//!
//! Pages name each file with the version of all of them (`?v=<hash>`), so a browser may keep a file
//! for good under that name and a new build's pages ask for new names.

use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// An embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// Every file under `/dashboard/assets/`.
pub const ASSETS: [Asset; 4] = [
    Asset {
        name: "dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/dashboard.js"),
    },
    Asset {
        name: "dashboard.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("assets/dashboard.css"),
    },
    Asset {
        name: "chart.umd.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/chart.umd.min.js"),
    },
    Asset {
        name: "chart.js.LICENSE.md",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("assets/chart.js.LICENSE.md"),
    },
];

/// The file called `name`.
pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// The version of all the files together: the first 12 hex digits of their SHA-256.
pub fn version() -> &'static str {
    static VERSION: LazyLock<String> = LazyLock::new(|| {
        let mut h = Sha256::new();
        for a in &ASSETS {
            h.update(a.name.as_bytes());
            h.update(a.bytes);
        }
        h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
    });
    &VERSION
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_found_and_versioned() {
        assert!(find("dashboard.js").is_some_and(|a| a.content_type.starts_with("text/javascript")));
        assert!(find("../Cargo.toml").is_none() && find("").is_none());
        assert_eq!(version().len(), 12);
        let chart = std::str::from_utf8(find("chart.umd.min.js").unwrap().bytes).unwrap();
        assert!(chart.starts_with("/*!\n * Chart.js v4.6.1"), "the vendored file, unmodified");
    }
}
