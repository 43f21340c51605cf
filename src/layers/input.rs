//! The model input, stated once: named axes with sizes, a dtype, and the role each axis plays
//! (the batch, and a token sequence or feature columns). The planner, the trainer, the loader,
//! generation and capture all read the roles from here instead of guessing axes by name.

use super::Axes;

/// What the second axis of a model input holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// Token positions (a language model).
    Seq(String),
    /// Feature columns (an MLP over numeric rows).
    Features(String),
}

/// Which named axis of the input plays which role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRoles {
    pub batch: String,
    pub item: Item,
}

impl Default for InputRoles {
    /// `batch` by `seq` tokens.
    fn default() -> Self {
        InputRoles::tokens("batch", "seq")
    }
}

impl InputRoles {
    /// `batch` by `seq` tokens.
    pub fn tokens(batch: &str, seq: &str) -> InputRoles {
        InputRoles {
            batch: batch.into(),
            item: Item::Seq(seq.into()),
        }
    }

    /// `batch` by `features` columns.
    pub fn features(batch: &str, features: &str) -> InputRoles {
        InputRoles {
            batch: batch.into(),
            item: Item::Features(features.into()),
        }
    }

    /// The roles of two named axes: the first is the batch; the second holds tokens when
    /// `tokens` says so, feature columns otherwise. None for any other number of axes.
    pub fn of_axes(axes: &Axes, tokens: bool) -> Option<InputRoles> {
        let names: Vec<&String> = axes.keys().collect();
        match names.as_slice() {
            [b, s] if tokens => Some(InputRoles::tokens(b, s)),
            [b, f] => Some(InputRoles::features(b, f)),
            _ => None,
        }
    }

    /// The sequence axis (None for feature rows).
    pub fn seq(&self) -> Option<&str> {
        match &self.item {
            Item::Seq(s) => Some(s),
            Item::Features(_) => None,
        }
    }

    /// The second axis, whatever it holds.
    pub fn item_axis(&self) -> &str {
        match &self.item {
            Item::Seq(s) | Item::Features(s) => s,
        }
    }
}

/// The input of a model (`[model.input]`, or derived from `[train] batch_size` and `[data]`):
/// named axes, a dtype, and the roles of the axes when there are two.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub axes: Axes,
    pub dtype: tch::Kind,
    pub roles: Option<InputRoles>,
}

impl InputSpec {
    /// An input of `axes` in `dtype`, its roles read from them: integer inputs are tokens.
    pub fn new(axes: Axes, dtype: tch::Kind) -> InputSpec {
        let tokens = matches!(dtype, tch::Kind::Int64 | tch::Kind::Int);
        InputSpec {
            roles: InputRoles::of_axes(&axes, tokens),
            axes,
            dtype,
        }
    }

    /// The sequence axis and its size (a language model's input).
    pub fn seq(&self) -> Option<(&str, i64)> {
        let s = self.roles.as_ref()?.seq()?;
        Some((s, *self.axes.get(s)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_come_from_the_axes_and_the_dtype() {
        let axes: Axes = [("b".to_string(), 4), ("t".to_string(), 16)]
            .into_iter()
            .collect();
        let i = InputSpec::new(axes.clone(), tch::Kind::Int64);
        assert_eq!(i.roles, Some(InputRoles::tokens("b", "t")));
        assert_eq!(i.seq(), Some(("t", 16)));
        let f = InputSpec::new(axes, tch::Kind::Float);
        assert_eq!(f.roles, Some(InputRoles::features("b", "t")));
        assert_eq!(f.seq(), None);
        let one: Axes = [("x".to_string(), 3)].into_iter().collect();
        assert_eq!(InputSpec::new(one, tch::Kind::Float).roles, None);
    }
}
