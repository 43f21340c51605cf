//! Packing: consecutive examples (in their order) share windows of `seq_len + 1` tokens. Each
//! token records its document (`docs`), from which a batch gives per-document positions
//! (restarting at 0) and a mask that keeps attention inside a document, so a packed window
//! computes what its documents would one by one. A document's first token is no target in a
//! window (nothing of its document precedes it).

use super::Example;

/// Packs token examples greedily, in order, into windows of at most `window` tokens.
pub fn pack(examples: Vec<Example>, window: usize) -> Vec<Example> {
    let mut p = Packer::new(window);
    let mut out: Vec<Example> = examples.into_iter().filter_map(|e| p.push(e)).collect();
    out.extend(p.finish());
    out
}

/// Packs a stream of examples: each `push` may give the window that the example did not fit.
pub struct Packer {
    window: usize,
    ids: Vec<i64>,
    mask: Vec<u8>,
    docs: Vec<u32>,
    doc: u32,
}

impl Packer {
    /// A packer into windows of at most `window` tokens.
    pub fn new(window: usize) -> Packer {
        Packer {
            window,
            ids: vec![],
            mask: vec![],
            docs: vec![],
            doc: 0,
        }
    }

    fn take(&mut self) -> Option<Example> {
        if self.ids.is_empty() {
            return None;
        }
        self.doc = 0;
        Some(Example::Tokens {
            ids: std::mem::take(&mut self.ids),
            mask: std::mem::take(&mut self.mask),
            prompt_len: 0,
            docs: std::mem::take(&mut self.docs),
        })
    }

    /// Adds an example; returns the full window it did not fit into, if any.
    pub fn push(&mut self, e: Example) -> Option<Example> {
        let Example::Tokens { ids, mut mask, .. } = e else {
            return None;
        };
        let done = if !self.ids.is_empty() && self.ids.len() + ids.len() > self.window {
            self.take()
        } else {
            None
        };
        if !self.ids.is_empty() {
            if let Some(m) = mask.first_mut() {
                *m = 0;
            }
        }
        self.docs.extend(std::iter::repeat_n(self.doc, ids.len()));
        self.doc += 1;
        self.ids.extend(ids);
        self.mask.extend(mask);
        done
    }

    /// The last, partly filled window.
    pub fn finish(mut self) -> Option<Example> {
        self.take()
    }
}

/// Per-token positions within their document, for `n` tokens of a window whose documents are
/// `docs` (empty: one document). Tokens past `docs` continue the last document.
pub fn positions(docs: &[u32], n: usize) -> Vec<i64> {
    let mut out = Vec::with_capacity(n);
    let mut pos = 0i64;
    for j in 0..n {
        if j > 0 && j < docs.len() && docs[j] != docs[j - 1] {
            pos = 0;
        }
        out.push(pos);
        pos += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(ids: &[i64]) -> Example {
        Example::Tokens {
            ids: ids.to_vec(),
            mask: vec![1; ids.len()],
            prompt_len: 0,
            docs: vec![],
        }
    }

    #[test]
    fn packs_in_order_and_restarts_positions() -> Result<(), String> {
        let p = pack(vec![ex(&[1, 2, 3]), ex(&[4, 5]), ex(&[6, 7, 8, 9])], 5);
        assert_eq!(p.len(), 2);
        let Some(Example::Tokens {
            ids, mask, docs, ..
        }) = p.first()
        else {
            return Err("no token window".into());
        };
        assert_eq!(ids, &[1, 2, 3, 4, 5]);
        assert_eq!(mask, &[1, 1, 1, 0, 1]);
        assert_eq!(docs, &[0, 0, 0, 1, 1]);
        assert_eq!(positions(docs, 5), vec![0, 1, 2, 0, 1]);
        assert_eq!(positions(&[], 3), vec![0, 1, 2]);
        Ok(())
    }
}
