//! Hugging Face tensor names: each parameter the decoder builder made has a role
//! ([`crate::models::decoder::Role`]); the family's converter ([`super::families`]) names the
//! tensor that holds it and how it is laid out. The map is derived from the built tree, so it
//! cannot drift from the builder.

use super::transform::Transform;
use super::Arch;
use crate::base::Result;
use crate::models::decoder::Role;
use crate::tree::Builder;

/// `(pzt label, HF tensor name, transform)` for every parameter of `arch`'s model.
pub fn weight_map(arch: &Arch) -> Result<Vec<(String, String, Transform)>> {
    let built = arch.build(&Builder::slots())?;
    Ok(names(arch, &built.parts))
}

/// The HF names of the parameters with these roles.
/// A tensor of experts stored expert by expert ([`Transform::PerExpert`]) gives one entry per
/// expert, each naming its slice ([`Transform::Expert`]).
pub fn names(arch: &Arch, parts: &[(String, Role)]) -> Vec<(String, String, Transform)> {
    let mut out = vec![];
    for (label, role) in parts {
        let (name, tr) = name_of(arch, *role);
        match (tr, *role) {
            (Transform::PerExpert, Role::Experts { layer, which, bias }) => {
                let n = arch.decoder.moe.as_ref().map_or(0, |m| m.num_experts);
                for index in 0..n {
                    let (name, tr) = name_of(
                        arch,
                        Role::Expert {
                            layer,
                            which,
                            bias,
                            index,
                        },
                    );
                    out.push((label.clone(), name, tr));
                }
            }
            _ => out.push((label.clone(), name, tr)),
        }
    }
    out
}

fn name_of(a: &Arch, role: Role) -> (String, Transform) {
    (super::families::of(a.family).name_of)(a, role)
}
