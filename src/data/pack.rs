//! Packing: consecutive examples (in their order) share windows of `seq_len + 1` tokens. Each
//! token records its document (`docs`), from which a batch gives per-document positions
//! (restarting at 0) and a mask that keeps attention inside a document, so a packed window
//! computes what its documents would one by one. A document's first token is no target in a
//! window (nothing of its document precedes it).

use super::Example;

/// Packs token examples greedily, in order, into windows of at most `window` tokens.
pub fn pack(examples: Vec<Example>, window: usize) -> Vec<Example> {
    let mut out = vec![];
    let (mut ids, mut mask, mut docs): (Vec<i64>, Vec<u8>, Vec<u32>) = (vec![], vec![], vec![]);
    let mut doc = 0u32;
    let mut flush = |ids: &mut Vec<i64>, mask: &mut Vec<u8>, docs: &mut Vec<u32>, doc: &mut u32| {
        if !ids.is_empty() {
            out.push(Example::Tokens {
                ids: std::mem::take(ids),
                mask: std::mem::take(mask),
                prompt_len: 0,
                docs: std::mem::take(docs),
            });
        }
        *doc = 0;
    };
    for e in examples {
        let Example::Tokens {
            ids: e_ids,
            mask: mut e_mask,
            ..
        } = e
        else {
            continue;
        };
        if !ids.is_empty() && ids.len() + e_ids.len() > window {
            flush(&mut ids, &mut mask, &mut docs, &mut doc);
        }
        if !ids.is_empty() {
            if let Some(m) = e_mask.first_mut() {
                *m = 0;
            }
        }
        docs.extend(std::iter::repeat_n(doc, e_ids.len()));
        doc += 1;
        ids.extend(e_ids);
        mask.extend(e_mask);
    }
    flush(&mut ids, &mut mask, &mut docs, &mut doc);
    out
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
