//! End-to-end tests: the real `heyvm` binary, a real daemon per test (own
//! data dir, own port) and real bubblewrap sandboxes.

mod support;

mod smoke;
mod network;
mod walkthrough;
mod isolation;
mod tui;
mod streams;
mod compat;
mod persistence;
mod lifecycle;
mod bad_input;
mod cli;
mod proxy;
mod auth;
mod deploy;
mod shell;
mod pool;
