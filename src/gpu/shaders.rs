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

/// matmul.wgsl's declaration of its k step, which [`assembled`] sets to the adapter's
/// `Tuning::tile_k`.
pub const TILE_K_DECLARATION: &str = "const TILE_K: u32 = 16u;";

/// The full source wgpu compiles for one family, with matmul's k step set to `tile_k` (one of
/// `Tuning::TILE_K_CHOICES`).
pub fn assembled(family: &str, tile_k: u32) -> Option<String> {
    let (name, src) = FAMILIES.iter().find(|(name, _)| *name == family)?;
    let src = if *name == "matmul" {
        // A missing declaration would make every tile_k silently the same: refuse instead.
        if !src.contains(TILE_K_DECLARATION) {
            return None;
        }
        src.replace(
            TILE_K_DECLARATION,
            &format!("const TILE_K: u32 = {tile_k}u;"),
        )
    } else {
        src.to_string()
    };
    Some(format!("{COMMON}\n{src}"))
}
