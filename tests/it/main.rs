//! One integration test binary (keeps link time down); each module drives the real binaries.

mod attack;
mod check;
mod corpus;
mod faults;
mod hostile;
mod install;
mod isolation;
mod pipeline;
mod push;
mod queue;
mod releases;
mod router;
mod runner;
mod sandbox;
mod scale;
mod schema;
mod servers;
mod services;
mod ssh;
mod support;
mod topology;
mod web;
