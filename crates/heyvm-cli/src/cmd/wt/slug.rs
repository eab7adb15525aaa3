//! Branch name -> worktree directory and sandbox name.
//!
//! ASCII letters and digits are kept (lowercased); every run of other
//! characters becomes one `-`; leading and trailing `-` are dropped; the
//! result is cut to [`MAX_SLUG`] characters so `wt-<slug>` is a valid
//! sandbox name. `feature/My_Change` -> `feature-my-change`.

/// `wt-` + slug must fit the 63-character sandbox name limit.
pub const MAX_SLUG: usize = 60;

pub fn slugify(branch: &str) -> String {
    let mut out = String::with_capacity(branch.len());
    for c in branch.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(MAX_SLUG);
    out.trim_end_matches('-').to_string()
}

pub fn sandbox_name(slug: &str) -> String {
    format!("wt-{slug}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_predictable() {
        assert_eq!(slugify("feature/my-change"), "feature-my-change");
        assert_eq!(slugify("Feature/My_Change"), "feature-my-change");
        assert_eq!(slugify("fix/#12--crash!"), "fix-12-crash");
        assert_eq!(slugify("/lead/trail/"), "lead-trail");
        assert_eq!(slugify("äöü"), "");
        assert_eq!(slugify("release/v1.2.3"), "release-v1-2-3");
        let long = slugify(&format!("{}/{}", "a".repeat(59), "b".repeat(10)));
        assert_eq!(long, "a".repeat(59), "cut to 60 characters, trailing dash dropped");
        assert_eq!(sandbox_name("x"), "wt-x");
    }
}
