//! [`PoolConfig`]: the `[pool]` section of the configuration.

use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};
use crate::op::Op;

/// The size of a pool; the `[pool]` section of the configuration.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Worker threads, and so the most calls that reach the inner store at once; at
    /// least 1. Default 16.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Jobs that may wait in the queue before submitters block; at least 1. Default 256.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
}

fn default_workers() -> usize {
    16
}
fn default_queue_capacity() -> usize {
    256
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: default_workers(),
            queue_capacity: default_queue_capacity(),
        }
    }
}

impl PoolConfig {
    /// Checks that both sizes are at least 1.
    pub fn validate(&self) -> Result<()> {
        for (key, value) in [
            ("workers", self.workers),
            ("queue_capacity", self.queue_capacity),
        ] {
            if value == 0 {
                return Err(Error::new(ErrorKind::Config, Op::Config)
                    .with_key(&format!("pool.{key}"))
                    .with_detail("must be at least 1"));
            }
        }
        Ok(())
    }
}
