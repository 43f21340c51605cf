//! Most of the tests: one binary, one module per part of pzt (named after the code it tests).
#[path = "../common/mod.rs"]
mod common;

mod architecture;
mod assembly;
mod attention;
mod bad_input;
mod chat;
mod checkpoints;
mod chunked;
mod cli;
mod demo;
mod docs;
mod hf;
mod inspect;
mod labels;
mod layers;
mod named;
mod objectives;
mod optim;
mod outputs;
mod pack;
mod peft;
mod preference;
mod probe;
mod qlora;
mod recipes;
mod rewiring;
mod select;
mod spec;
mod speed;
mod store;
mod strategy;
mod toolshed;
mod train;
mod tree;
