//! The node's analysis of a study runs in a child process (`pulmo analyze-job`), so that a crash
//! in it (a stack overflow, an allocation that fails, the kernel's out-of-memory killer) fails
//! that one job with the reason instead of taking the node down and, replayed at every start,
//! taking it down again (issue 38). The node goes on receiving and delivering meanwhile; what the
//! child made is read back from the job's folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::job::{Analysis, Processed, StudyProcessor};
use crate::config::Config;
use crate::store::StudyJobInput;

/// What the child writes into the job's folder: its `Processed`, as JSON.
const PROCESSED: &str = "processed.json";

/// Runs each job in `exe analyze-job`, with the node's configuration.
pub struct Isolated {
    exe: PathBuf,
    config: PathBuf,
}

impl Isolated {
    /// `config` is written to `config_file`, which the children read.
    pub fn new(exe: PathBuf, config: &Config, config_file: PathBuf) -> std::io::Result<Isolated> {
        let text = toml::to_string(config).map_err(std::io::Error::other)?;
        std::fs::write(&config_file, text)?;
        Ok(Isolated {
            exe,
            config: config_file,
        })
    }
}

impl StudyProcessor for Isolated {
    fn process(&self, job: &StudyJobInput, out: &Path) -> Processed {
        let input = out.join("job.json");
        if let Err(e) = serde_json::to_vec(job)
            .map_err(std::io::Error::other)
            .and_then(|j| std::fs::write(&input, j))
        {
            return Processed::Failed(format!("cannot write {}: {e}", input.display()));
        }
        let mut child = Command::new(&self.exe);
        child
            .arg("--config")
            .arg(&self.config)
            .arg("analyze-job")
            .arg(&input)
            .arg(out)
            .stdin(Stdio::null());
        die_with_parent(&mut child);
        let status = match child.status() {
            Ok(s) => s,
            Err(e) => {
                return Processed::Failed(format!(
                    "cannot start the analysis process {}: {e}",
                    self.exe.display()
                ));
            }
        };
        let written = std::fs::read(out.join(PROCESSED))
            .ok()
            .and_then(|b| serde_json::from_slice::<Processed>(&b).ok());
        match written {
            Some(p) if status.success() => p,
            _ => Processed::Failed(format!(
                "the analysis process {}; not tried again",
                ended(status)
            )),
        }
    }
}

/// A child outlives a node killed with SIGKILL unless the kernel is asked to end it too; the next
/// node would then find it writing into a job folder it reuses.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// How a child ended, in words.
fn ended(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (_, Some(libc::SIGABRT)) => {
            "aborted (SIGABRT: a stack overflow or an allocation that failed, in the log)".into()
        }
        (_, Some(libc::SIGKILL)) => {
            "was killed (SIGKILL: the out-of-memory killer, or an operator)".into()
        }
        (_, Some(libc::SIGSEGV)) => "crashed (SIGSEGV)".into(),
        (_, Some(sig)) => format!("ended on signal {sig}"),
        (Some(0), None) => format!("left no readable {PROCESSED}"),
        (Some(code), None) => format!("exited with status {code}"),
        (None, None) => "ended for an unknown reason".into(),
    }
}

/// The child's side (`pulmo analyze-job INPUT OUT`): run the analysis of the job in `input` into
/// `out` and write what it made there.
pub fn run_child(config: &Config, input: &Path, out: &Path) -> Result<(), String> {
    let job: StudyJobInput = std::fs::read(input)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot read the job {}: {e}", input.display()))?;
    let span = tracing::info_span!("job", id = job.job_id, study = %job.study_uid);
    let _enter = span.enter();
    let processed = match Analysis::new(config.clone()) {
        Ok(a) => a.process(&job, out),
        Err(e) => Processed::Failed(format!("the SR template cannot be loaded: {e}")),
    };
    let json = serde_json::to_vec(&processed).map_err(|e| e.to_string())?;
    let path = out.join(PROCESSED);
    std::fs::write(&path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_that_dies_on_a_signal_fails_the_job_with_the_reason() {
        use std::os::unix::process::ExitStatusExt;
        let abort = std::process::ExitStatus::from_raw(libc::SIGABRT);
        assert!(ended(abort).contains("SIGABRT"), "{}", ended(abort));
        let exit = std::process::ExitStatus::from_raw(3 << 8);
        assert_eq!(ended(exit), "exited with status 3");
        // A program that is not pulmo leaves no processed.json: the job fails, saying how it ended.
        let dir = tempfile::tempdir().expect("tempdir");
        let isolated = Isolated {
            exe: PathBuf::from("/bin/false"),
            config: dir.path().join("c.toml"),
        };
        let job = StudyJobInput {
            job_id: 1,
            study_uid: "1.2.3".into(),
            files: vec![],
            attempt: 1,
        };
        match isolated.process(&job, dir.path()) {
            Processed::Failed(r) => assert!(r.contains("exited with status 1"), "{r}"),
            other => panic!("{other:?}"),
        }
    }
}
