//! Selectors: refinements, edits, and parameter sharing after edits.
use crate::common::*;
use pzt::layers::misc::{Identity, Rescale};
use pzt::models::mlp::mlp;
use pzt::prelude::*;

fn transformer_like(b: &Builder) -> Node {
    let block = |i: usize| {
        let s = b.scope(&format!("blocks.{i}"));
        Sequential::named(vec![
            (
                "attention".into(),
                Residual::build(
                    SelfAttentionConfig::new(8, 2, 4)
                        .build(&s.pp("attention"))
                        .unwrap(),
                ),
            ),
            (
                "mlp".into(),
                Residual::build(
                    mlp(
                        &s.pp("mlp"),
                        "embedding",
                        "hidden",
                        &[8, 16, 8],
                        Activation::Gelu,
                    )
                    .unwrap(),
                ),
            ),
        ])
    };
    Sequential::named(vec![(
        "blocks".into(),
        Sequential::new((0..3).map(block).collect()),
    )])
}

#[test]
fn refinements() {
    let m = transformer_like(&Builder::new(0));
    // Attention blocks have 4 Linear (q, k, v, out); mlps have 2 Affine each with a Linear.
    let lin = select(&m).at_instances_of("Linear");
    assert_eq!(lin.count(), 3 * (4 + 2));
    assert_eq!(
        select(&m)
            .at_instances_of("Linear")
            .within("Attention")
            .count(),
        3 * 3
    );
    assert_eq!(select(&m).at_instances_of("Attention").count(), 3);
    let q = select(&m)
        .at_instances_of("Attention")
        .at_path("input_to_query");
    assert_eq!(
        q.paths()[0],
        "blocks.0.attention.delta.attention.input_to_query"
    );
    assert_eq!(select(&m).at_path("blocks").at_children().count(), 3);
    let nth = select(&m).at_instances_of("Attention").pick_nth(1);
    assert_eq!(nth.paths(), ["blocks.1.attention.delta.attention"]);
    assert_eq!(
        select(&m).at_instances_of("Attention").pick_nth(-1).paths(),
        ["blocks.2.attention.delta.attention"]
    );
    assert_eq!(
        select(&m).at_instances_of("Attention").pick_nth(7).count(),
        0
    );
    let w = select(&m).at_subtrees_where(
        |p, n| n.kind() == "Residual" && p.last().map(|s| s == "mlp").unwrap_or(false),
        false,
    );
    assert_eq!(w.count(), 3);
    // Outermost vs innermost.
    assert_eq!(
        select(&m)
            .at_subtrees_where(|_, n| n.kind() == "Sequential", false)
            .count(),
        1
    );
    assert!(
        select(&m)
            .at_subtrees_where(|_, n| n.kind() == "Sequential", true)
            .count()
            > 3
    );
    // get and assert_count.
    let sel = select(&m).at_instances_of("Attention");
    let got = sel.get();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|(_, n)| n.kind() == "Attention"));
    let e = select(&m)
        .at_instances_of("Attention")
        .assert_count(2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected 2") && e.contains("found 3"), "{e}");
}

#[test]
fn invert_selects_the_complement() {
    let m = transformer_like(&Builder::new(0));
    let sel = select(&m).at_path("blocks.1");
    let inv = sel.invert();
    assert_eq!(inv.paths(), ["blocks.0", "blocks.2"]);
    // Every Linear is either under the selection or under its complement.
    let under = |s: &Selection| {
        s.get()
            .iter()
            .map(|(_, n)| select(n).at_instances_of("Linear").count())
            .sum::<usize>()
    };
    assert_eq!(
        under(&sel) + under(&inv),
        select(&m).at_instances_of("Linear").count()
    );
}

#[test]
fn apply_and_set_replace_and_share_parameters() {
    let b = Builder::new(1);
    let m = transformer_like(&b);
    let x = named(&[5, 8], &["seq", "embedding"], 2);
    // Wrap every mlp Residual's delta in a Rescale(0): the mlps now contribute nothing.
    let edited = select(&m)
        .at_instances_of("Residual")
        .at_path("delta")
        .within("Residual")
        .apply(|path, n| {
            if path.iter().any(|s| s == "mlp") {
                Ok(Sequential::new(vec![
                    n.clone(),
                    Node::new(Rescale { by: 0.0 }),
                ]))
            } else {
                Ok(n.clone())
            }
        })
        .unwrap();
    assert_eq!(select(&edited).at_instances_of("Rescale").count(), 3 + 3); // 3 query scales + 3 new
                                                                           // Parameters are shared with the original tree.
    for (p, q) in m.parameters().iter().zip(edited.parameters()) {
        assert!(p.same(&q));
    }
    // Equivalent to removing the mlps.
    let no_mlp = select(&m)
        .at_instances_of("Residual")
        .at_path("delta")
        .within("Residual")
        .apply(|_, n| Ok(n.clone()))
        .unwrap();
    let _ = no_mlp;
    let removed = select(&m)
        .at_subtrees_where(|p, _| p.last().map(|s| s == "mlp").unwrap_or(false), false)
        .remove_from_parent()
        .unwrap();
    let y1 = edited
        .forward(x.clone(), &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap();
    let y2 = removed
        .forward(x.clone(), &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap();
    assert_close(&y1, &y2, 1e-5);
    // The original is unchanged.
    assert_eq!(
        select(&m)
            .at_subtrees_where(|p, _| p.last().map(|s| s == "mlp").unwrap_or(false), false)
            .count(),
        3
    );
    // set: every activation becomes Identity.
    let ident = select(&m)
        .at_instances_of("Elementwise")
        .set(&Node::new(Identity {}))
        .unwrap();
    assert_eq!(select(&ident).at_instances_of("Elementwise").count(), 0);
    assert_eq!(select(&ident).at_instances_of("Identity").count(), 3);
}

#[test]
fn insert_and_remove_inside_sequences() {
    let b = Builder::new(2);
    let m = mlp(&b.scope("mlp"), "f", "h", &[2, 4, 4, 2], Activation::Relu).unwrap();
    assert_eq!(m.children().len(), 5);
    let scaled = select(&m)
        .at_instances_of("Elementwise")
        .insert_after(&Node::new(Rescale { by: 2.0 }))
        .unwrap();
    let names: Vec<&str> = scaled.children().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["0", "1", "2", "3", "4", "5", "6"]);
    let kinds: Vec<&str> = scaled.children().iter().map(|(_, c)| c.kind()).collect();
    assert_eq!(
        kinds,
        [
            "Affine",
            "Elementwise",
            "Rescale",
            "Affine",
            "Elementwise",
            "Rescale",
            "Affine"
        ]
    );
    let before = select(&m)
        .at_path("0")
        .insert_before(&Node::new(Identity {}))
        .unwrap();
    assert_eq!(before.children()[0].1.kind(), "Identity");
    let removed = select(&m)
        .at_instances_of("Elementwise")
        .remove_from_parent()
        .unwrap();
    let kinds: Vec<&str> = removed.children().iter().map(|(_, c)| c.kind()).collect();
    assert_eq!(kinds, ["Affine", "Affine", "Affine"]);
    // Numbers: relu then x2 equals relu of the doubled hidden pre-activation.
    let x = named(&[3, 2], &["batch", "f"], 3);
    let y = scaled
        .forward(x.clone(), &SideInputs::new())
        .unwrap()
        .into_tensor()
        .unwrap();
    assert_eq!(y.size_of("f").unwrap(), 2);
    // Named-children sequences get fresh names.
    let named_seq = Sequential::named(vec![
        ("a".into(), Node::new(Identity {})),
        ("b".into(), Node::new(Identity {})),
    ]);
    let ins = select(&named_seq)
        .at_path("a")
        .insert_after(&Node::new(Rescale { by: 1.0 }))
        .unwrap();
    let names: Vec<&str> = ins.children().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "rescale", "b"]);
}

#[test]
fn edits_outside_sequences_are_errors() {
    let b = Builder::new(3);
    let r = Residual::build(Node::new(Identity {}));
    let e = select(&r)
        .at_path("delta")
        .remove_from_parent()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Residual") && e.contains("not a sequence"),
        "{e}"
    );
    let m = mlp(&b.scope("m"), "f", "h", &[2, 2], Activation::Relu).unwrap();
    assert!(select(&m)
        .insert_after(&Node::new(Identity {}))
        .unwrap_err()
        .to_string()
        .contains("root"));
    // apply errors carry the path.
    let e = select(&m)
        .at_instances_of("Linear")
        .apply(|_, _| Err(pzt::Error::Config("boom".into())))
        .unwrap_err();
    assert_eq!(e.layer_path().as_deref(), Some("0.linear"));
}
