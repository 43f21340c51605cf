//! `pzt demo xor`: an MLP built from combinators learns XOR.

use super::common::{parse_device, Failure};
use pzt::backend::device_name;

/// Run a built-in example.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Demo,
}

#[derive(clap::Subcommand)]
enum Demo {
    /// Train an MLP built from combinators on XOR until the MSE is below 1e-3.
    #[command(after_help = "Example:\n  pzt demo xor --show")]
    Xor {
        /// Base seed for parameter initialization.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Give up after this many steps.
        #[arg(long, default_value_t = 2000)]
        max_steps: usize,
        /// auto (GPU when present), cpu or cuda.
        #[arg(long, default_value = "auto")]
        device: String,
        /// Show the model tree before training.
        #[arg(long)]
        show: bool,
    },
}

pub fn run(a: Args) -> Result<(), Failure> {
    let Demo::Xor {
        seed,
        max_steps,
        device,
        show,
    } = a.which;
    let device = parse_device(&device)?;
    let cfg = pzt::demo::XorConfig {
        seed,
        max_steps,
        device,
        ..Default::default()
    };
    println!(
        "pzt demo xor: MLP [2 -> {} -> 1] from combinators, AdamW lr {}, on {}",
        cfg.hidden,
        cfg.lr,
        device_name(device)
    );
    if show {
        let b = pzt::tree::Builder::slots();
        let m = pzt::models::mlp::mlp(
            &b.scope("mlp"),
            "features",
            "hidden",
            &[2, cfg.hidden, 1],
            pzt::layers::misc::Activation::Tanh,
        )
        .map_err(|e| Failure::Run(e.to_string()))?;
        print!("{}", m.render(usize::MAX));
    }
    let report = pzt::demo::train_xor(&cfg, |step, loss| {
        if step == 1 || step % 100 == 0 {
            println!("step {step:>5}  loss {loss:.6}");
        }
    })
    .map_err(|e| Failure::Run(e.to_string()))?;
    let (last_step, last_loss) = report.losses.last().copied().unwrap_or((0, f64::NAN));
    println!("step {last_step:>5}  loss {last_loss:.6}  (final)");
    let preds: Vec<String> = report
        .predictions
        .iter()
        .map(|p| format!("{p:.3}"))
        .collect();
    println!(
        "predictions for (0,0) (0,1) (1,0) (1,1): {}  (targets 0 1 1 0)",
        preds.join(" ")
    );
    if last_loss < cfg.target_loss {
        println!("reached loss < {} in {last_step} steps", cfg.target_loss);
        Ok(())
    } else {
        Err(Failure::Run(format!(
            "loss {last_loss:.6} still above {} after {last_step} steps",
            cfg.target_loss
        )))
    }
}
