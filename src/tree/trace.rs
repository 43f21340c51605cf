//! Recording the outputs of leaf layers during one forward pass on this thread: what the
//! planner sums up as activation memory.

use std::cell::RefCell;

type Record = (String, i64, tch::Kind);

thread_local! {
    static TRACE: RefCell<Option<Vec<Record>>> = const { RefCell::new(None) };
}

/// Runs `f` while recording the output of every leaf layer (kind, number of elements, dtype)
/// on this thread.
pub fn trace_leaf_outputs<R>(f: impl FnOnce() -> R) -> (R, Vec<Record>) {
    TRACE.with(|t| *t.borrow_mut() = Some(vec![]));
    let r = f();
    let v = TRACE.with(|t| t.borrow_mut().take()).unwrap_or_default();
    (r, v)
}

/// Records an output in the current trace, if one is running: every leaf layer's, and
/// activations that no leaf layer produced (the fused attention output).
pub fn trace_record(kind: &str, numel: i64, dtype: tch::Kind) {
    TRACE.with(|t| {
        if let Some(v) = t.borrow_mut().as_mut() {
            v.push((kind.to_string(), numel, dtype));
        }
    });
}

/// The kind of the record a recomputed segment leaves: the activation bytes it needs while it
/// is recomputed in backward (as float32 elements). Planners add the largest one, not each.
pub const RECOMPUTE_PEAK: &str = "recompute peak";

/// Runs `f` (a segment recomputed in backward) recording its leaf outputs apart; if a trace is
/// running, returns the bytes they take (the segment's activations are not kept in the trace).
pub fn trace_segment<R>(f: impl FnOnce() -> R) -> (R, Option<i64>) {
    let running = TRACE.with(|t| t.borrow().is_some());
    if !running {
        return (f(), None);
    }
    let outer = TRACE.with(|t| t.borrow_mut().replace(vec![]));
    let r = f();
    let inner = TRACE.with(|t| std::mem::replace(&mut *t.borrow_mut(), outer));
    let bytes = inner.map(|v| {
        v.iter()
            .filter(|(k, _, _)| k != RECOMPUTE_PEAK)
            .map(|(_, n, k)| n * crate::base::dtype::elem_size(*k))
            .sum()
    });
    (r, bytes)
}
