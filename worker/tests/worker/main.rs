//! Integration tests of the worker: apalis workers over the real engine (real Redis, real
//! PostgreSQL), the process's shutdown, the binary's start-up checks, schedules across worker
//! processes, the reliability drills that kill processes and restart Redis, and one order traced
//! across the api and a worker process over OTLP.

mod helpers;

mod binary;
mod cluster;
mod drills;
mod failover;
mod flow_control;
mod lifecycle;
mod maintenance;
mod order_stream;
mod partitions;
mod report_schedules;
mod runner;
mod schedules;
mod shop;
mod smtp;
mod startup;
mod traces;
mod uploads;
