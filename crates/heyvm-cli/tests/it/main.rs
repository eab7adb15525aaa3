//! End-to-end tests: the real `heyvm` binary, a real daemon per test (own
//! data dir, own port) and real bubblewrap sandboxes.

mod support;

mod smoke;
mod walkthrough;
mod isolation;
