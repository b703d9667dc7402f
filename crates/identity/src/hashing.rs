//! A fixed pool of password-hashing threads, one per core, each with its own reusable argon2
//! working memory. Hashing never runs on the async runtime, at most one hash per core runs at
//! a time, and a full queue sheds load (`TOO_MANY_ATTEMPTS_TRY_LATER`) instead of piling up.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use zeroize::Zeroizing;

use crate::password::{self, Check, Scratch};
use crate::{Error, Result};

/// Jobs waiting beyond this many are refused.
const QUEUE: usize = 256;

enum Job {
    Hash(Zeroizing<String>, oneshot::Sender<Result<String, String>>),
    Verify(Zeroizing<String>, String, oneshot::Sender<Check>),
}

/// Handle to the hashing threads (they stop when the last handle is dropped).
pub(crate) struct HashPool {
    jobs: SyncSender<Job>,
}

impl HashPool {
    pub(crate) fn new(threads: usize) -> Result<Self> {
        let (jobs, rx) = sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("password-hash-{i}"))
                .spawn(move || work(&rx))
                .map_err(|e| Error::Internal(format!("starting hashing threads: {e}")))?;
        }
        Ok(Self { jobs })
    }

    fn submit(&self, job: Job) -> Result<()> {
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Error::code("TOO_MANY_ATTEMPTS_TRY_LATER")),
            Err(TrySendError::Disconnected(_)) => {
                Err(Error::Internal("hashing threads are gone".into()))
            }
        }
    }

    /// Hashes a new password (argon2id).
    pub(crate) async fn hash(&self, password: &str) -> Result<String> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Hash(Zeroizing::new(password.to_owned()), tx))?;
        rx.await
            .map_err(|_| Error::Internal("hashing thread failed".into()))?
            .map_err(Error::Internal)
    }

    /// Checks a password against a stored hash.
    pub(crate) async fn verify(&self, password: &str, stored: &str) -> Result<Check> {
        let (tx, rx) = oneshot::channel();
        self.submit(Job::Verify(
            Zeroizing::new(password.to_owned()),
            stored.to_owned(),
            tx,
        ))?;
        rx.await
            .map_err(|_| Error::Internal("hashing thread failed".into()))
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    // Allocated at the first job, so an idle server stays small.
    let mut scratch: Option<Scratch> = None;
    loop {
        let job = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        match job {
            // The caller has gone (its client disconnected, or it was cancelled): a flood of
            // abandoned sign-ins does not keep the threads busy after the clients gave up.
            Ok(Job::Hash(_, reply)) if reply.is_closed() => {}
            Ok(Job::Verify(_, _, reply)) if reply.is_closed() => {}
            Ok(Job::Hash(pw, reply)) => {
                let _ = reply.send(password::hash_with(
                    scratch.get_or_insert_with(Scratch::default),
                    &pw,
                ));
            }
            Ok(Job::Verify(pw, stored, reply)) => {
                let _ = reply.send(password::verify_with(
                    scratch.get_or_insert_with(Scratch::default),
                    &pw,
                    &stored,
                ));
            }
            Err(_) => return,
        }
    }
}
