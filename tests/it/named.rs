//! Named-axis semantics and their error cases.
use crate::common::*;
use pzt::named::ops::einsum;
use pzt::prelude::*;
use tch::{Device, Kind, Tensor};

#[test]
fn wrap_tag_untag_unwrap() {
    let t = randn(&[2, 3, 4], 1);
    let x = NamedTensor::wrap(t.shallow_clone(), &[]).unwrap();
    assert_eq!(x.positional_shape(), vec![2, 3, 4]);
    let y = x.tag(&["a", "b", "c"]).unwrap();
    assert_eq!(y.positional_shape(), Vec::<i64>::new());
    assert_eq!(y.size_of("b").unwrap(), 3);
    // untag moves named axes to positional in the order given.
    let z = y.untag(&["c", "a"]).unwrap();
    assert_eq!(z.positional_shape(), vec![4, 2]);
    assert_eq!(z.named_shape(), vec![("b".to_string(), 3)]);
    let back = z.unwrap(&["b"]).unwrap();
    assert_eq!(back.size(), vec![3, 4, 2]);
    assert_eq!(max_abs_diff(&back, &t.permute([1, 2, 0])), 0.0);
    // unwrap with all names gives the original layout in the named order.
    let w = y.unwrap(&["a", "b", "c"]).unwrap();
    assert_eq!(max_abs_diff(&w, &t), 0.0);
}

#[test]
fn tag_prefix_and_untag_prefix() {
    let x = NamedTensor::wrap(randn(&[2, 3, 4], 2), &[]).unwrap();
    let y = x.tag_prefix(&["a"]).unwrap();
    assert_eq!(y.positional_shape(), vec![3, 4]);
    assert_eq!(y.named_shape(), vec![("a".to_string(), 2)]);
    let z = y.untag_prefix(&["a"]).unwrap();
    assert_eq!(z.positional_shape(), vec![2, 3, 4]);
    assert_eq!(max_abs_diff(z.tensor(), x.tensor()), 0.0);
}

#[test]
fn axis_errors_name_axes_and_shapes() {
    let x = named(&[2, 3], &["a", "b"], 3);
    let e = x.untag(&["zzz"]).unwrap_err().to_string();
    assert!(e.contains("zzz") && e.contains("a: 2"), "{e}");
    let e = NamedTensor::wrap(randn(&[2, 3], 1), &["a"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 names") && e.contains("2 positional"), "{e}");
    let e = NamedTensor::wrap(randn(&[2, 3], 1), &["a", "a"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("appears twice"), "{e}");
    let e = x.unwrap(&[]).unwrap_err().to_string();
    assert!(e.contains("remain"), "{e}");
    // untag requires no positional axes.
    let p = x.untag(&["a"]).unwrap();
    assert!(p.untag(&["b"]).is_err());
    assert!(p.untag_prefix(&["b"]).is_ok());
}

#[test]
fn arithmetic_broadcasts_by_name() {
    let a = named(&[2, 3], &["x", "y"], 4);
    let b = named(&[3, 5], &["y", "z"], 5);
    let c = a.add(&b).unwrap();
    assert_eq!(c.names(), &["x", "y", "z"]);
    let expect = a.tensor().unsqueeze(-1) + b.tensor().unsqueeze(0);
    assert_eq!(max_abs_diff(c.tensor(), &expect), 0.0);
    // Order of named axes does not matter.
    let b2 = b.with_name_order(&["z".into(), "y".into()]).unwrap();
    assert_close(&c, &a.add(&b2).unwrap(), 0.0);
    let m = a.mul(&b).unwrap();
    assert_close(
        &m,
        &NamedTensor::wrap(
            a.tensor().unsqueeze(-1) * b.tensor().unsqueeze(0),
            &["x", "y", "z"],
        )
        .unwrap(),
        1e-6,
    );
}

#[test]
fn one_name_two_sizes_is_an_error_naming_both_shapes() {
    let a = named(&[2, 3], &["x", "y"], 4);
    let b = named(&[4], &["y"], 5);
    let e = a.add(&b).unwrap_err().to_string();
    assert!(
        e.contains("`y`") && e.contains("size 3") && e.contains("size 4"),
        "{e}"
    );
    assert!(e.contains("x: 2") && e.contains("y: 4"), "{e}");
}

#[test]
fn positional_axes_broadcast_numpy_style() {
    let a = NamedTensor::wrap(randn(&[2, 4], 6), &[])
        .unwrap()
        .tag_prefix(&["n"])
        .unwrap();
    let b = NamedTensor::wrap(randn(&[4], 7), &[]).unwrap();
    let c = a.add(&b).unwrap();
    assert_eq!(c.positional_shape(), vec![4]);
    assert_eq!(max_abs_diff(c.tensor(), &(a.tensor() + b.tensor())), 0.0);
}

#[test]
fn nmap_vectorizes_over_named_axes() {
    // A positional op (matrix-vector product over the last axis) lifted over named axes.
    let x = NamedTensor::wrap(randn(&[2, 3, 4], 8), &[])
        .unwrap()
        .tag_prefix(&["a", "b"])
        .unwrap();
    let w = randn(&[4, 5], 9);
    let y = x.nmap(|t| Ok(t.matmul(&w))).unwrap();
    assert_eq!(y.named_shape(), vec![("a".into(), 2), ("b".into(), 3)]);
    assert_eq!(y.positional_shape(), vec![5]);
    let expect = x.tensor().matmul(&w);
    assert!(max_abs_diff(y.tensor(), &expect) < 1e-6);
    // The op must keep the batch dimension.
    assert!(x.nmap(|t| Ok(t.sum(Kind::Float))).is_err());
}

#[test]
fn reductions_and_softmax_by_name() {
    let x = named(&[2, 3, 4], &["a", "b", "c"], 10);
    let s = x.sum(&["b"]).unwrap();
    assert_eq!(s.names(), &["a", "c"]);
    assert!(
        max_abs_diff(
            s.tensor(),
            &x.tensor().sum_dim_intlist([1i64].as_slice(), false, None)
        ) < 1e-6
    );
    let m = x.mean(&["a", "c"]).unwrap();
    assert_eq!(m.names(), &["b"]);
    assert!(
        max_abs_diff(
            m.tensor(),
            &x.tensor().mean_dim([0i64, 2].as_slice(), false, None)
        ) < 1e-6
    );
    let mx = x.max(&["c"]).unwrap();
    assert!(max_abs_diff(mx.tensor(), &x.tensor().amax([2i64].as_slice(), false)) < 1e-6);
    let sm = x.softmax(&["b"]).unwrap();
    let expect = NamedTensor::wrap(x.tensor().softmax(1, Kind::Float), &["a", "b", "c"]).unwrap();
    assert_close(&expect, &sm, 1e-6);
    // Joint softmax over two axes sums to one over both.
    let j = x.softmax(&["a", "c"]).unwrap().sum(&["a", "c"]).unwrap();
    assert!(max_abs_diff(j.tensor(), &Tensor::ones([3], (Kind::Float, Device::Cpu))) < 1e-5);
    assert!(x.sum(&["nope"]).unwrap_err().to_string().contains("nope"));
}

#[test]
fn contraction_by_name() {
    let a = named(&[2, 3, 4], &["batch", "i", "k"], 11);
    let b = named(&[4, 5], &["k", "j"], 12);
    let c = a.contract(&b, &["k"]).unwrap();
    assert_eq!(c.names(), &["batch", "i", "j"]);
    let expect = a.tensor().matmul(b.tensor());
    assert!(max_abs_diff(c.tensor(), &expect) < 1e-5);
    // Shared axes not contracted are batch axes.
    let d = einsum(&[&a, &a], &["k"]).unwrap();
    assert_eq!(d.names(), &["batch", "i"]);
    let e = a
        .contract(&named(&[7], &["k"], 1), &["k"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`k`") && e.contains("4") && e.contains("7"),
        "{e}"
    );
}

#[test]
fn indexing_slicing_take() {
    let x = named(&[3, 4], &["a", "b"], 13);
    let i = x.index("b", 2).unwrap();
    assert_eq!(i.names(), &["a"]);
    assert_eq!(max_abs_diff(i.tensor(), &x.tensor().select(1, 2)), 0.0);
    let s = x.slice("b", 1, 3).unwrap();
    assert_eq!(s.size_of("b").unwrap(), 2);
    assert!(x
        .index("b", 4)
        .unwrap_err()
        .to_string()
        .contains("out of range"));
    assert!(x.slice("a", 2, 5).is_err());
    let ids = NamedTensor::wrap(
        Tensor::from_slice(&[2i64, 0, 2, 1]).reshape([2, 2]),
        &["p", "q"],
    )
    .unwrap();
    let t = x.take("a", &ids).unwrap();
    assert_eq!(t.names(), &["p", "q", "b"]);
    assert_eq!(
        max_abs_diff(
            &t.index("p", 1)
                .unwrap()
                .index("q", 1)
                .unwrap()
                .tensor()
                .shallow_clone(),
            &x.tensor().get(1)
        ),
        0.0
    );
}

#[test]
fn stack_and_concat() {
    let a = named(&[2, 3], &["x", "y"], 14);
    let b = named(&[3, 2], &["y", "x"], 15);
    let s = NamedTensor::stack(&[a.clone(), b.clone()], "n").unwrap();
    assert_eq!(s.size_of("n").unwrap(), 2);
    assert_close(&s.index("n", 1).unwrap(), &b, 0.0);
    let c = NamedTensor::concat(&[a.clone(), b.clone()], "x").unwrap();
    assert_eq!(c.size_of("x").unwrap(), 4);
    assert_close(&c.slice("x", 2, 4).unwrap(), &b, 0.0);
    assert!(NamedTensor::stack(&[a.clone(), named(&[2], &["x"], 1)], "n").is_err());
    assert!(NamedTensor::stack(std::slice::from_ref(&a), "x").is_err());
}

#[test]
fn dtype_device_order_canonicalize() {
    let x = named(&[2, 3], &["b", "a"], 16);
    let c = x.canonicalize().unwrap();
    assert_eq!(c.names(), &["a", "b"]);
    assert_close(&x, &c, 0.0);
    let h = x.to_kind(Kind::Double).unwrap();
    assert_eq!(h.kind(), Kind::Double);
    let d = x.to_device(Device::Cpu).unwrap();
    assert_eq!(d.device(), Device::Cpu);
    let other = named(&[3, 2], &["a", "b"], 1);
    assert_eq!(x.order_like(&other).unwrap().names(), &["a", "b"]);
    assert!(x.order_like(&named(&[2], &["q"], 1)).is_err());
}
