//! One integration-test binary (each tests/*.rs would otherwise link the whole crate again).

mod common;

mod adapters;
mod cli;
mod cnn;
mod config;
mod conv;
mod cpu;
mod cpu_kernels;
mod data;
mod errors;
mod gpu;
mod gradcheck;
mod integrity;
mod kubernetes;
mod layout;
mod network;
mod outputs;
mod pack;
mod plan;
mod resume;
mod slurm;
mod sweep;
mod train;
mod web;
