//! `pzt train --profile`: libtorch's operator profiler over the steps after the first one this
//! invocation runs (the first warms up), its trace written and its tables kept for the summary.

use super::ProfileOptions;
use crate::backend::Profiler;
use crate::base::Result;

/// The profiling of a run's steps (nothing without `--profile`, and on ranks but 0).
pub struct Profiling {
    opts: Option<ProfileOptions>,
    /// Steps this invocation ran.
    ran: u64,
    profiler: Option<Profiler>,
    /// The tables of the profiled steps, once the profiler stopped.
    tables: Option<String>,
}

impl Profiling {
    /// Profiles as `opts` say (`None`: not at all).
    pub fn new(opts: Option<ProfileOptions>) -> Profiling {
        Profiling {
            opts,
            ran: 0,
            profiler: None,
            tables: None,
        }
    }

    /// Before a step: the profiler starts with the second one.
    pub fn before_step(&mut self) -> Result<()> {
        if self.ran == 1 && self.opts.is_some() {
            self.profiler = Some(Profiler::start(true)?);
        }
        Ok(())
    }

    /// After a step, the run at `step`: the profiler stops after the steps asked for.
    pub fn after_step(&mut self, step: u64) -> Result<()> {
        self.ran += 1;
        if self.opts.as_ref().is_some_and(|p| self.ran == 1 + p.steps) {
            let p = self.profiler.take();
            self.tables = self.stop(p, step)?;
        }
        Ok(())
    }

    /// The loop ended at `step`: stops a profiler still running (its tables replace those
    /// kept) and returns the tables.
    pub fn finish(&mut self, step: u64) -> Result<Option<String>> {
        if self.profiler.is_some() {
            let p = self.profiler.take();
            self.tables = self.stop(p, step)?;
        }
        Ok(self.tables.take())
    }

    /// Stops the profiler `p` (if it ran), writes its trace and returns its tables.
    fn stop(&self, p: Option<Profiler>, step: u64) -> Result<Option<String>> {
        let (Some(p), Some(o)) = (p, &self.opts) else {
            return Ok(None);
        };
        let mut tables = String::new();
        crate::base::outputs::write_with(&o.trace, |tmp| {
            tables = p.stop(Some(tmp), 30)?;
            Ok(())
        })?;
        Ok(Some(format!(
            "profile of {} step(s), trace in {}:\n\n{tables}",
            o.steps.min(step),
            o.trace.display()
        )))
    }
}
