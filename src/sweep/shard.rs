//! Which slice of a sweep's runs this process takes: `--shard I/N`, a Slurm job array, or a
//! Kubernetes Indexed Job; an environment that names no valid slice is an error.

/// Which slice of the runs this process takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `I/N`.
    pub fn parse(s: &str) -> Option<Shard> {
        let (i, n) = s.split_once('/')?;
        let (index, count) = (i.trim().parse().ok()?, n.trim().parse().ok()?);
        (count > 0 && index < count).then_some(Shard { index, count })
    }

    /// From the schedulers' environment (`None`: no scheduler variable is set, the whole
    /// sweep). Slurm job arrays: the task's place in `SLURM_ARRAY_TASK_MIN..=MAX` by
    /// `SLURM_ARRAY_TASK_STEP` (`--array=0-12:4` gives tasks 0, 4, 8, 12: shards 0..4), of
    /// `SLURM_ARRAY_TASK_COUNT`. A Kubernetes Indexed Job: `JOB_COMPLETION_INDEX` of `count`
    /// (`--shard-count`). Anything unreadable or inconsistent is an error, never "all of it":
    /// a shard that silently ran the whole sweep would train every run once per task.
    pub fn from_env(count: Option<usize>) -> Result<Option<Shard>, ShardError> {
        Self::from_vars(|k| std::env::var(k).ok(), count)
    }

    /// [`Shard::from_env`] with the variables read by `var`.
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        count: Option<usize>,
    ) -> Result<Option<Shard>, ShardError> {
        let number = |k: &'static str| -> Result<Option<usize>, ShardError> {
            match var(k) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| ShardError::NotANumber {
                        variable: k,
                        value: v,
                    }),
            }
        };
        let bad = |message: String| Err(ShardError::Inconsistent(message));
        let slurm = SLURM_ARRAY_VARIABLES.iter().any(|k| var(k).is_some());
        let job_index = number("JOB_COMPLETION_INDEX")?;
        if slurm && job_index.is_some() {
            return bad("both SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX are set".into());
        }
        if slurm {
            if count.is_some() {
                return bad("--shard-count goes with JOB_COMPLETION_INDEX, not a Slurm array (which gives its own count)".into());
            }
            let (Some(id), Some(n)) = (
                number("SLURM_ARRAY_TASK_ID")?,
                number("SLURM_ARRAY_TASK_COUNT")?,
            ) else {
                return bad("a Slurm array sets both SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT; one is missing".into());
            };
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let step = number("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1);
            let max = number("SLURM_ARRAY_TASK_MAX")?.unwrap_or(min + step * n.saturating_sub(1));
            let array = format!(
                "SLURM_ARRAY_TASK_ID={id} in an array {min}-{max}:{step} of SLURM_ARRAY_TASK_COUNT={n}"
            );
            if n == 0
                || step == 0
                || max < min
                || (max - min) % step != 0
                || (max - min) / step + 1 != n
            {
                return bad(format!(
                    "{array}: the array's bounds, step and count disagree (an array given as a list of ids cannot be sharded from the environment)"
                ));
            }
            if id < min || id > max || (id - min) % step != 0 {
                return bad(format!("{array}: the task id is not one of the array's"));
            }
            return Ok(Some(Shard {
                index: (id - min) / step,
                count: n,
            }));
        }
        match (job_index, count) {
            (None, None) => Ok(None),
            (None, Some(n)) => bad(format!(
                "--shard-count {n} needs JOB_COMPLETION_INDEX (a Kubernetes Indexed Job sets it)"
            )),
            (Some(i), None) => bad(format!(
                "JOB_COMPLETION_INDEX={i} needs --shard-count N (the Job's completions)"
            )),
            (Some(index), Some(count)) if index < count => Ok(Some(Shard { index, count })),
            (Some(i), Some(n)) => bad(format!(
                "JOB_COMPLETION_INDEX={i} is not below --shard-count {n}"
            )),
        }
    }

    pub fn takes(&self, run_index: usize) -> bool {
        run_index % self.count == self.index
    }
}

/// The Slurm variables that say a process is a task of a job array.
const SLURM_ARRAY_VARIABLES: [&str; 5] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_STEP",
];

/// Why the schedulers' environment names no shard this process can take.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(
        "{variable}={value:?} is not a whole number (hint: pass --shard I/N to choose the slice yourself)"
    )]
    NotANumber {
        variable: &'static str,
        value: String,
    },
    #[error("{0} (hint: pass --shard I/N to choose the slice yourself)")]
    Inconsistent(String),
}
