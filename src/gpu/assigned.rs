//! The GPU a scheduler gave this process. Slurm's `--gres=gpu:N` names the task's GPUs in
//! `SLURM_JOB_GPUS` (and `SLURM_STEP_GPUS` in a step) and, by default, in
//! `CUDA_VISIBLE_DEVICES` and `ROCR_VISIBLE_DEVICES`; other launchers set the last two. Those
//! are read by CUDA and ROCm, not by Vulkan drivers or wgpu, which list every GPU of the
//! node: without this, every task of an array trained on the node's first GPU.

use super::adapter::AdapterSummary;
use super::error::GpuError;

/// The variables that may name this process's GPUs, in the order they are read: the first one
/// set (and not empty) is the assignment.
pub const ASSIGNMENT_VARIABLES: [&str; 5] = [
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "SLURM_STEP_GPUS",
    "SLURM_JOB_GPUS",
];

/// GPU indices a scheduler assigned, as one variable gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignedGpus {
    pub variable: &'static str,
    /// The indices as listed (a task given several GPUs trains on the first).
    pub ids: Vec<usize>,
}

impl std::fmt::Display for AssignedGpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.ids.iter().map(ToString::to_string).collect();
        write!(f, "{}={}", self.variable, ids.join(","))
    }
}

impl AssignedGpus {
    /// From the environment (`None`: no variable names a GPU).
    pub fn from_env() -> Result<Option<AssignedGpus>, GpuError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`AssignedGpus::from_env`] with the variables read by `var`. An index that is not a
    /// whole number (a GPU UUID, `NoDevFiles`) is an error: the process was given a GPU that
    /// wgtrain cannot place, and training on another one would be a silent mistake.
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<AssignedGpus>, GpuError> {
        for variable in ASSIGNMENT_VARIABLES {
            let Some(value) = var(variable).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            let ids = value
                .split(',')
                .map(|id| id.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| GpuError::BadSetting {
                    variable,
                    expected: "GPU indices such as 0 or 0,1 (choose a GPU known by UUID with --adapter)",
                    got: value.clone(),
                })?;
            return Ok(Some(AssignedGpus { variable, ids }));
        }
        Ok(None)
    }

    /// The position in `adapters` (`wgtrain devices`' list) of the first assigned GPU. The
    /// node's GPUs count in PCI bus order (as Slurm and `CUDA_DEVICE_ORDER=PCI_BUS_ID` do) on
    /// the first backend that has any (Vulkan before GL); software adapters never count.
    /// Where the node shows exactly as many GPUs as were assigned, they are the task's own (a
    /// cgroup hides the others, while `SLURM_JOB_GPUS` still gives node-wide indices; or the
    /// task has every GPU), in the order of their indices: the first listed is the one at its
    /// rank among them. Where it shows more, the first index is the GPU's place among them.
    pub fn resolve(&self, adapters: &[AdapterSummary]) -> Result<usize, GpuError> {
        let backend = adapters.iter().find(|s| !s.software).map(|s| &s.backend);
        let mut gpus: Vec<usize> = (0..adapters.len())
            .filter(|&i| !adapters[i].software && Some(&adapters[i].backend) == backend)
            .collect();
        if gpus.iter().all(|&i| !adapters[i].pci_bus_id.is_empty()) {
            gpus.sort_by(|&a, &b| adapters[a].pci_bus_id.cmp(&adapters[b].pci_bus_id));
        }
        let first = self.ids[0];
        let place = if self.ids.len() == gpus.len() {
            Some(self.ids.iter().filter(|&&id| id < first).count())
        } else {
            Some(first).filter(|&i| i < gpus.len() && self.ids.len() < gpus.len())
        };
        place.map(|p| gpus[p]).ok_or_else(|| {
            let found = match gpus.len() {
                0 => format!(
                    "no GPU (found only {})",
                    if adapters.is_empty() {
                        "no adapter at all".to_string()
                    } else {
                        adapters
                            .iter()
                            .map(|s| format!("{} ({})", s.name, s.backend))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
                n => format!(
                    "{n} GPUs on {}: {}",
                    backend.map_or("", String::as_str),
                    gpus.iter()
                        .enumerate()
                        .map(|(k, &i)| format!("{k}: {}", adapters[i].name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            GpuError::AssignedGpuMissing {
                assigned: self.to_string(),
                id: first,
                found,
            }
        })
    }
}
