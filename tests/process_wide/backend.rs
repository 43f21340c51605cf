//! The C++ shim: deterministic switches, autocast, SDPA backends, RNG state, seeded draws.
//! (Its own test binary: these switches are process-wide.)
use pzt::backend::*;
use tch::{Device, Kind, Tensor};

#[test]
fn shim_switches_round_trip() {
    set_deterministic(true).unwrap();
    assert!(deterministic());
    set_deterministic(false).unwrap();
    assert!(!deterministic());
    set_deterministic_warn_only(true).unwrap();
    assert!(deterministic() && deterministic_warn_only());
    set_deterministic(false).unwrap();
    assert!(!deterministic_warn_only());

    set_cudnn_deterministic(true).unwrap();
    assert!(cudnn_deterministic());
    set_cudnn_deterministic(false).unwrap();
    assert!(!cudnn_deterministic());

    let before = sdpa_backends();
    let only_math = SdpaBackends {
        flash: false,
        mem_efficient: false,
        math: true,
        cudnn: false,
    };
    set_sdpa_backends(only_math).unwrap();
    assert_eq!(sdpa_backends(), only_math);
    set_sdpa_backends(before).unwrap();
    assert_eq!(sdpa_backends(), before);

    // CPU autocast to bfloat16 makes a float32 matmul produce bfloat16.
    assert_eq!(autocast(Device::Cpu), None);
    set_autocast(Device::Cpu, Some(Kind::BFloat16)).unwrap();
    assert_eq!(autocast(Device::Cpu), Some(Kind::BFloat16));
    let a = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
    assert_eq!(a.matmul(&a).kind(), Kind::BFloat16);
    set_autocast(Device::Cpu, None).unwrap();
    assert_eq!(autocast(Device::Cpu), None);
    assert_eq!(a.matmul(&a).kind(), Kind::Float);
}

#[test]
fn rng_state_get_set_restores_the_sequence() {
    tch::manual_seed(3);
    let state = rng_state(Device::Cpu).unwrap();
    assert_eq!(state.kind(), Kind::Uint8);
    let a = Tensor::randn([8], (Kind::Float, Device::Cpu));
    set_rng_state(Device::Cpu, &state).unwrap();
    let b = Tensor::randn([8], (Kind::Float, Device::Cpu));
    assert_eq!((a - b).abs().max().double_value(&[]), 0.0);
    assert!(set_rng_state(Device::Cpu, &Tensor::zeros([3], (Kind::Uint8, Device::Cpu))).is_err());
    if !tch::Cuda::is_available() {
        assert!(rng_state(Device::Cuda(0)).is_err());
    }
}

#[test]
fn seeded_random_is_reproducible_and_leaves_global_rng_alone() {
    let a = seeded_random(7, Distribution::Normal, &[16], Kind::Float, Device::Cpu).unwrap();
    let b = seeded_random(7, Distribution::Normal, &[16], Kind::Float, Device::Cpu).unwrap();
    let c = seeded_random(8, Distribution::Normal, &[16], Kind::Float, Device::Cpu).unwrap();
    assert_eq!((&a - &b).abs().max().double_value(&[]), 0.0);
    assert!((&a - &c).abs().max().double_value(&[]) > 0.0);
    let u = seeded_random(7, Distribution::Uniform, &[1000], Kind::Float, Device::Cpu).unwrap();
    assert!(u.min().double_value(&[]) >= 0.0 && u.max().double_value(&[]) < 1.0);

    tch::manual_seed(11);
    let x = Tensor::randn([4], (Kind::Float, Device::Cpu));
    tch::manual_seed(11);
    let _ = seeded_random(99, Distribution::Normal, &[100], Kind::Float, Device::Cpu).unwrap();
    let y = Tensor::randn([4], (Kind::Float, Device::Cpu));
    assert_eq!((x - y).abs().max().double_value(&[]), 0.0);
}

#[test]
fn versions_and_devices() {
    assert!(torch_version().starts_with("2.11"));
    let d = devices();
    assert_eq!(d[0], Device::Cpu);
    assert_eq!(d.len() > 1, tch::Cuda::is_available());
}
