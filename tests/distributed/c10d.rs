//! c10d through the shim, inside one process: two ranks on two threads, each with its own
//! store client and Gloo group. The reducer sums gradients while the backward pass runs (with
//! zeros for a parameter one rank has no gradient for), and all-reduce works on buckets.
use pzt::backend::dist::{Group, ReduceOp, Reducer, Store, Transport};
use std::time::Duration;
use tch::{Kind, Tensor};

const T: Duration = Duration::from_secs(60);

fn local() -> Transport {
    Transport {
        iface: None,
        host: Some("127.0.0.1".into()),
    }
}

/// Runs `f(rank, group)` on two ranks, one thread each, and returns their results.
fn two_ranks<R: Send + 'static>(
    prefix: &str,
    f: impl Fn(usize, &Group) -> R + Send + Sync + Copy + 'static,
) -> Vec<R> {
    let server = Store::new("127.0.0.1", 0, true, T, "").unwrap();
    let port = server.port();
    assert!(port > 0);
    let prefix = prefix.to_string();
    let handles: Vec<_> = (0..2)
        .map(|rank| {
            let prefix = prefix.clone();
            std::thread::spawn(move || {
                let store = Store::new("127.0.0.1", port, false, T, &prefix).unwrap();
                let g = Group::gloo(&store, rank, 2, T, &local(), "g").unwrap();
                f(rank, &g)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn all_reduce_sums_maxes_and_mins_in_buckets() {
    let out = two_ranks("ar", |rank, g| {
        let r = rank as f64;
        // Mixed dtypes and sizes, with buckets of 8 bytes: several buckets per dtype.
        let ts = vec![
            Tensor::from_slice(&[1.0f32 + r as f32, 2.0, 3.0]),
            Tensor::from_slice(&[10.0f64 * (r + 1.0)]),
            Tensor::from_slice(&[5i64 + rank as i64, -1]).reshape([2, 1]),
        ];
        g.all_reduce(&ts, ReduceOp::Sum, 8).unwrap();
        let m = Tensor::from_slice(&[r, -r]);
        g.all_reduce(std::slice::from_ref(&m), ReduceOp::Max, 1 << 20)
            .unwrap();
        let n = Tensor::from_slice(&[r]);
        g.all_reduce(std::slice::from_ref(&n), ReduceOp::Min, 1 << 20)
            .unwrap();
        g.barrier().unwrap();
        (
            Vec::<f32>::try_from(&ts[0]).unwrap(),
            Vec::<f64>::try_from(&ts[1]).unwrap(),
            Vec::<i64>::try_from(ts[2].reshape([-1])).unwrap(),
            Vec::<f64>::try_from(&m).unwrap(),
            Vec::<f64>::try_from(&n).unwrap(),
        )
    });
    for o in &out {
        assert_eq!(o.0, vec![3.0, 4.0, 6.0]);
        assert_eq!(o.1, vec![30.0]);
        assert_eq!(o.2, vec![11, -2]);
        assert_eq!(o.3, vec![1.0, 0.0]);
        assert_eq!(o.4, vec![0.0]);
    }
}

#[test]
fn the_reducer_sums_gradients_as_the_backward_pass_produces_them() {
    let out = two_ranks("red", |rank, g| {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[4.0f32, 5.0]).set_requires_grad(true);
        let c = Tensor::from_slice(&[7.0f32]).set_requires_grad(true);
        // Buckets of 4 bytes: one per parameter.
        // Buckets go in reverse parameter order: `b`, `a`, then `c`.
        let red = Reducer::new(
            g,
            &[c.shallow_clone(), a.shallow_clone(), b.shallow_clone()],
            4,
        )
        .unwrap();
        let mut counts = vec![];
        for _ in 0..2 {
            pzt::backend::clear_grads(&[a.shallow_clone(), b.shallow_clone(), c.shallow_clone()])
                .unwrap();
            // Rank 1 never uses `c`; the sum still has rank 0's gradient for it. Its gradients are
            // dropped (set to none) before each step, as the trainer does.
            let w = (rank + 1) as f64;
            let mut loss = (&a * w).sum(Kind::Float) + (&b * &b).sum(Kind::Float);
            if rank == 0 {
                loss += (&c * 3.0).sum(Kind::Float);
            }
            red.arm();
            loss.backward();
            red.finish().unwrap();
            counts.push(red.counts());
        }
        // Finishing a pass that was not armed is an error, not a crash.
        assert!(red.finish().is_err());
        (
            Vec::<f32>::try_from(a.grad()).unwrap(),
            Vec::<f32>::try_from(b.grad()).unwrap(),
            c.grad()
                .defined()
                .then(|| Vec::<f32>::try_from(c.grad()).unwrap()),
            counts,
        )
    });
    for (rank, o) in out.iter().enumerate() {
        assert_eq!(o.0, vec![3.0, 3.0, 3.0], "rank {rank}");
        assert_eq!(o.1, vec![16.0, 20.0], "rank {rank}");
        for (early, total) in &o.3 {
            assert_eq!(*total, 3);
            // `b`'s and `a`'s buckets go out while the backward pass runs; on rank 1, `c`'s
            // (no gradient there) waits for `finish`.
            assert!(*early >= 2, "rank {rank}: {:?}", o.3);
            if rank == 1 {
                assert_eq!(*early, 2);
            }
        }
    }
    // Rank 1 had no gradient for `c`, and gets the sum too: both ranks update the same
    // parameters.
    assert_eq!(out[0].2, Some(vec![3.0]));
    assert_eq!(out[1].2, Some(vec![3.0]));
}
