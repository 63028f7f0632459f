//! Every WGSL file, loaded with `include_str!` here and nowhere else. Each kernel file is
//! compiled with `common.wgsl` (step uniform, activations) in front of it.

pub const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// (family name, source) of every kernel file.
pub const FAMILIES: &[(&str, &str)] = &[
    ("batch", include_str!("../../shaders/batch.wgsl")),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    (
        "softmax_xent",
        include_str!("../../shaders/softmax_xent.wgsl"),
    ),
];

/// The full source wgpu compiles for one family.
pub fn assembled(family: &str) -> Option<String> {
    FAMILIES
        .iter()
        .find(|(name, _)| *name == family)
        .map(|(_, src)| format!("{COMMON}\n{src}"))
}
