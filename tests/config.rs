//! Configs: every paper experiment loads, overrides apply, bad keys and values are refused.

use std::path::Path;

use wgtrain::config::{ConfigError, TrainConfig};
use wgtrain::model::Activation;

fn from_str(text: &str, sets: &[&str]) -> Result<TrainConfig, ConfigError> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    TrainConfig::from_toml_str(text, Path::new("t.toml"), "t", &sets)
}

#[test]
fn every_paper_config_loads_with_its_reported_figures() {
    let names = [
        "softmax", "momentum", "l1-1e-2", "l1-1e-4", "l2-1e-2", "l2-1e-4", "sigmoid", "relu",
    ];
    for name in names {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("configs")
            .join(format!("{name}.toml"));
        let c = TrainConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.name, name);
        assert!(c.paper.is_some(), "{name} lacks its [paper] figures");
        assert_eq!(*c.layers.last().unwrap(), 10);
    }
    let softmax = TrainConfig::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/softmax.toml"),
        &[],
    )
    .unwrap();
    assert_eq!(softmax.layers, vec![784, 10]);
    assert!(!softmax.momentum);
}

#[test]
fn set_overrides_numbers_strings_and_lists() {
    let c = from_str(
        "",
        &[
            "learning_rate=0.5",
            "activation=relu",
            "layers=[4, 3, 2]",
            "momentum=false",
        ],
    )
    .unwrap();
    assert_eq!(c.learning_rate, 0.5);
    assert_eq!(c.activation, Activation::Relu);
    assert_eq!(c.layers, vec![4, 3, 2]);
    assert!(!c.momentum);
}

#[test]
fn rejects_unknown_key_with_a_suggestion() {
    let err = from_str("lr = 0.1", &[]).unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown key \"lr\" (did you mean \"learning_rate\"?)"),
        "{err}"
    );
    let err = from_str("", &["pateince=3"]).unwrap_err();
    assert!(
        err.to_string().contains("did you mean \"patience\""),
        "{err}"
    );
    // The paper's λ names point to the keys that hold them.
    let err = from_str("l2_lambda = 1e-4", &[]).unwrap_err();
    assert!(err.to_string().contains("did you mean \"l2\""), "{err}");
}

#[test]
fn rejects_wrong_types_naming_the_problem() {
    let err = from_str("batch_size = \"big\"", &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("t.toml"));
    assert!(from_str("activation = \"swish\"", &[]).is_err());
}

#[test]
fn rejects_impossible_values_naming_the_key() {
    for (set, key) in [
        ("batch_size=0", "batch_size"),
        ("learning_rate=-0.1", "learning_rate"),
        ("learning_rate=0", "learning_rate"),
        ("epochs=0", "epochs"),
        ("val_fraction=1.0", "val_fraction"),
        ("val_fraction=0", "val_fraction"),
        ("momentum_gamma=1.5", "momentum_gamma"),
        ("l2=-1", "l2"),
        ("layers=[784]", "layers"),
        ("layers=[784, 0, 10]", "layers"),
        ("patience=0", "patience"),
    ] {
        let err = from_str("", &[set]).expect_err(set);
        assert!(err.to_string().contains(key), "{set}: {err}");
    }
    assert!(matches!(
        from_str("", &["novalue"]),
        Err(ConfigError::BadOverride { .. })
    ));
}

#[test]
fn rejects_layers_that_disagree_with_the_data() {
    let c = from_str("layers = [784, 10]", &[]).unwrap();
    c.check_against_data(784, 10, 1000).unwrap();
    let input = c.check_against_data(36, 10, 1000).unwrap_err();
    assert!(
        input
            .to_string()
            .contains("input width must equal the data's 36"),
        "{input}"
    );
    let output = c.check_against_data(784, 3, 1000).unwrap_err();
    assert!(output.to_string().contains("3 classes"), "{output}");
    let batch = c.check_against_data(784, 10, c.batch_size - 1).unwrap_err();
    assert!(batch.to_string().contains("batch_size"), "{batch}");
}

#[test]
fn resolved_config_round_trips_through_toml() {
    let c = from_str(
        "",
        &[
            "l1=0.001",
            "early_stopping_rule=\"no_improvement\"",
            "optimizer=adam",
        ],
    )
    .unwrap();
    let back =
        TrainConfig::from_toml_str(&c.to_toml(), Path::new("back.toml"), "other", &[]).unwrap();
    assert_eq!(c, back);
}

#[test]
fn batch_mean_penalty_scaling_divides_lambda_by_the_batch_size_only_for_mean_gradients() {
    let c = from_str(
        "",
        &[
            "l1=0.01",
            "l2=0.02",
            "batch_size=100",
            "penalty_scaling=\"batch_mean\"",
        ],
    )
    .unwrap();
    let h = c.hyper();
    assert!(
        (h.l1 - 1e-4).abs() < 1e-15 && (h.l2 - 2e-4).abs() < 1e-15,
        "{h:?}"
    );
    let sum = from_str(
        "",
        &[
            "l1=0.01",
            "batch_size=100",
            "penalty_scaling=\"batch_mean\"",
            "gradient=\"sum\"",
        ],
    )
    .unwrap();
    assert_eq!(sum.hyper().l1, 0.01);
    let plain = from_str("", &["l1=0.01", "batch_size=100"]).unwrap();
    assert_eq!(
        plain.hyper().l1,
        0.01,
        "the default applies λ in full, as PyTorch's weight_decay"
    );
}

#[test]
fn a_config_changed_by_overrides_no_longer_carries_the_papers_figures() {
    let momentum = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/momentum.toml");
    let load = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        TrainConfig::load(&momentum, &sets).unwrap()
    };
    assert!(load(&[]).paper.is_some());
    // Another seed or name is the same experiment; so is a value set to what the file says.
    assert!(load(&["seed=7", "name=\"again\""]).paper.is_some());
    assert!(load(&["learning_rate=0.01"]).paper.is_some());
    // Anything else makes it another experiment, which `wgtrain table` must not set beside the
    // paper's numbers.
    assert!(load(&["learning_rate=0.5"]).paper.is_none());
    assert!(load(&["epochs=3"]).paper.is_none());
    // Unless the override gives figures of its own.
    let own = load(&["epochs=3", "paper={test_accuracy = 0.5, test_loss = 1.0}"]);
    assert_eq!(own.paper.map(|p| p.test_accuracy), Some(0.5));
}
