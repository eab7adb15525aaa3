//! End-to-end tests: the real `heyvm` binary, a real daemon per test (own
//! data dir, own port) and real bubblewrap sandboxes.

mod registry;
mod support;

mod agent_channel;
mod api_keys;
mod auth;
mod bad_input;
mod cli;
mod compat;
mod computers;
mod deploy;
mod exec_stdin;
mod files_agent;
mod fuzz;
mod hostile_api;
mod hostile_disk;
mod hostile_flood;
mod hostile_ids;
mod hostile_kernel;
mod hostile_net;
mod hostile_tokens;
mod idle;
mod images;
mod images_build;
mod isolation;
mod lifecycle;
mod mcp;
mod network;
mod openapi;
mod persistence;
mod polish;
mod pool;
mod proxy;
mod python_sdk;
mod s3_volumes;
mod shell;
mod smoke;
mod streams;
mod tui;
mod vm;
mod vm_faults;
mod walkthrough;
mod wt;
mod wt_remote;
