//! What wgtrain knows of one adapter: what `wgtrain devices` prints, and what a run records
//! of the GPU it ran on.

/// What `wgtrain devices` prints for one adapter.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub timestamp_queries: bool,
    pub software: bool,
    /// `0000:01:00.0` where the backend reports it (Vulkan, DX12), else empty.
    pub pci_bus_id: String,
    /// What named this adapter when it was opened (`--adapter 1`, `CUDA_VISIBLE_DEVICES=1`);
    /// `None` where wgtrain chose it (the best it found) or it was only listed.
    pub chosen_by: Option<String>,
}
