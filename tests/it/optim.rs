//! Optimizers and schedules against direct computations.
use pzt::params::Parameter;
use pzt::spec::{OptimConfig, OptimKind, Schedule};
use pzt::train::optim::Optimizer;
use tch::{Kind, Tensor};

fn cfg(kind: OptimKind) -> OptimConfig {
    OptimConfig {
        kind,
        lr: 0.1,
        betas: [0.9, 0.99],
        eps: 1e-8,
        weight_decay: 0.0,
        decay_norms_and_biases: false,
        momentum: 0.0,
        nesterov: false,
        clip_grad_norm: None,
        schedule: Schedule::Constant,
        warmup_steps: 0,
        min_lr_ratio: 0.0,
    }
}

fn set_grad(p: &Parameter, g: &[f32]) {
    let v = p.value();
    let loss = (&v * Tensor::from_slice(g).reshape(v.size())).sum(Kind::Float);
    loss.backward();
}

#[test]
fn adamw_matches_the_formula_and_skips_decay_for_1d() {
    let w = Parameter::new(
        "w",
        Tensor::from_slice(&[1f32, -2., 3., 0.5]).reshape([2, 2]),
    );
    let b = Parameter::new("b", Tensor::from_slice(&[1f32, 1.]));
    let mut c = cfg(OptimKind::Adamw);
    c.weight_decay = 0.5;
    let mut opt = Optimizer::new(vec![w.clone(), b.clone()], c);
    let (mut m, mut v) = (0f64, 0f64);
    let mut wv = 1f64; // track w[0,0]
    let mut bv = 1f64;
    for t in 1..=3 {
        opt.zero_grad().unwrap();
        let g = 0.3 * t as f32;
        set_grad(&w, &[g, 0., 0., 0.]);
        set_grad(&b, &[g, 0.]);
        opt.step(0.1).unwrap();
        let gd = g as f64;
        m = 0.9 * m + 0.1 * gd;
        v = 0.99 * v + 0.01 * gd * gd;
        let upd =
            0.1 * (m / (1.0 - 0.9f64.powi(t))) / ((v / (1.0 - 0.99f64.powi(t))).sqrt() + 1e-8);
        wv = wv * (1.0 - 0.1 * 0.5) - upd;
        bv -= upd; // no decay on 1-D parameters
    }
    assert!(
        opt.last_step_fused(),
        "float32 parameters on one device use the fused kernel"
    );
    assert!((w.value().double_value(&[0, 0]) - wv).abs() < 1e-6);
    assert!((b.value().double_value(&[0]) - bv).abs() < 1e-6);
    assert!(opt.state().contains_key("m.w") && opt.state().contains_key("v.b"));
}

#[test]
fn sgd_momentum_and_nesterov() {
    for nesterov in [false, true] {
        let p = Parameter::new("p", Tensor::from_slice(&[1f32]));
        let mut c = cfg(OptimKind::Sgd);
        c.momentum = 0.9;
        c.nesterov = nesterov;
        let mut opt = Optimizer::new(vec![p.clone()], c);
        let (mut x, mut buf) = (1f64, 0f64);
        for t in 0..3 {
            opt.zero_grad().unwrap();
            let g = 1.0 + t as f64;
            set_grad(&p, &[g as f32]);
            opt.step(0.1).unwrap();
            buf = if t == 0 { g } else { 0.9 * buf + g };
            let d = if nesterov { g + 0.9 * buf } else { buf };
            x -= 0.1 * d;
        }
        assert!(
            (p.value().double_value(&[0]) - x).abs() < 1e-6,
            "nesterov {nesterov}"
        );
    }
}

#[test]
fn schedules() {
    let mut c = cfg(OptimKind::Adamw);
    c.lr = 1.0;
    c.warmup_steps = 10;
    assert!((c.lr_at(0, 100) - 0.1).abs() < 1e-12);
    assert!((c.lr_at(9, 100) - 1.0).abs() < 1e-12);
    assert_eq!(c.lr_at(50, 100), 1.0);
    c.schedule = Schedule::Cosine;
    c.min_lr_ratio = 0.1;
    assert!((c.lr_at(10, 100) - 1.0).abs() < 1e-12);
    assert!((c.lr_at(55, 100) - 0.55).abs() < 1e-12);
    assert!((c.lr_at(100, 100) - 0.1).abs() < 1e-12);
    c.schedule = Schedule::Linear;
    assert!((c.lr_at(55, 100) - 0.55).abs() < 1e-12);
    assert!((c.lr_at(100, 100) - 0.1).abs() < 1e-12);
}

#[test]
fn clipping_and_grad_norm() {
    let p = Parameter::new("p", Tensor::from_slice(&[0f32, 0.]));
    let opt = Optimizer::new(vec![p.clone()], cfg(OptimKind::Sgd));
    set_grad(&p, &[3., 4.]);
    let n = opt.grad_norm().unwrap();
    assert!((n - 5.0).abs() < 1e-9);
    opt.clip(n, 1.0).unwrap();
    assert!((opt.grad_norm().unwrap() - 1.0).abs() < 1e-5);
    assert_eq!(opt.first_bad_grad().unwrap(), None);
}

#[test]
fn adamw_falls_back_for_other_dtypes_with_the_same_numbers() {
    let run = |kind: Kind| {
        let p = Parameter::new(
            "p",
            Tensor::from_slice(&[1f32, -1., 0.5, 2.])
                .reshape([2, 2])
                .to_kind(kind),
        );
        let mut c = cfg(OptimKind::Adamw);
        c.weight_decay = 0.1;
        let mut opt = Optimizer::new(vec![p.clone()], c);
        for _ in 0..3 {
            opt.zero_grad().unwrap();
            let v = p.value();
            (&v * &v).sum(Kind::Float).backward();
            opt.step(0.05).unwrap();
        }
        (p.value().to_kind(Kind::Double), opt.last_step_fused())
    };
    let (a, fa) = run(Kind::Float);
    let (b, fb) = run(Kind::Double);
    assert!(fa && !fb);
    assert!((a - b).abs().max().double_value(&[]) < 1e-5);
}

#[test]
fn zero_grad_drops_gradients_and_a_parameter_without_one_is_not_updated() {
    let a = Parameter::new("a", Tensor::from_slice(&[1f32, 2.]));
    let b = Parameter::new("b", Tensor::from_slice(&[3f32, 4.]));
    let mut config = cfg(OptimKind::Adamw);
    config.weight_decay = 0.1;
    config.decay_norms_and_biases = true;
    let mut opt = Optimizer::new(vec![a.clone(), b.clone()], config);
    for _ in 0..2 {
        opt.zero_grad().unwrap();
        assert!(a.grad().is_none() && b.grad().is_none());
        // Only `a` takes part in the loss.
        (a.value() * 2.0).sum(Kind::Float).backward();
        assert!(b.grad().is_none());
        assert!(opt.grad_norm().unwrap() > 0.0);
        opt.step(0.1).unwrap();
    }
    let bv = Vec::<f32>::try_from(&b.value()).unwrap();
    assert_eq!(bv, vec![3.0, 4.0], "no gradient: no update, no decay");
    let av = Vec::<f32>::try_from(&a.value()).unwrap();
    assert!(av[0] < 1.0 && av[1] < 2.0);
    // The norm is each gradient's float32 norm, combined: sqrt(2^2 + 2^2).
    let norm = opt.grad_norm().unwrap();
    assert!((norm - 8f64.sqrt()).abs() < 1e-6, "{norm}");
}
