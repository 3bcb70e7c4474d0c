//! Signature checks, batched and spread over the machine's cores.
//!
//! Signatures are the verifier's dominant cost (an ed25519 check is ~100x a row hash), and
//! unlike the hash chain they do not depend on each other. So the row walk only queues them:
//! full batches of [`BATCH`] go to worker threads (ed25519 batch verification, several times
//! cheaper per signature than one by one, see [`batch_equation_holds`]), and a failing batch is re-checked one signature at
//! a time with `verify_strict` so the first bad one is named. Batches cover ascending,
//! disjoint ranges of rows, so the earliest bad signature is the smallest seq any batch
//! reports, whichever finishes first.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use std::iter::once;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha512};

/// Signatures checked per batch: large enough to amortise the multiscalar multiplication
/// (measured here: ~16 µs a signature at 256, ~15 µs at 1024, half of it decompressing `R`),
/// small enough that re-checking a failed batch one by one stays cheap.
pub const BATCH: usize = 1024;

/// Whose signature it is, to say which failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signer {
    /// The brain's, over the row.
    Brain,
    /// The agent's, over the result the row carries.
    Agent,
}

/// One signature to check, and the row it belongs to.
pub(super) struct Pending {
    pub seq: u64,
    pub signer: Signer,
    pub message: Vec<u8>,
    pub signature: Signature,
    pub key: VerifyingKey,
}

/// The first bad signature found: its row and whose it is.
pub(super) type Bad = (u64, Signer);

/// Queued signatures and the workers checking them.
pub(super) struct Signatures {
    batch: Vec<Pending>,
    pool: Option<Pool>,
    in_flight: usize,
    first_bad: Option<Bad>,
}

impl Signatures {
    pub fn new() -> Signatures {
        Signatures {
            batch: Vec::with_capacity(BATCH),
            pool: None,
            in_flight: 0,
            first_bad: None,
        }
    }

    /// Queues a signature; a full batch goes to a worker.
    pub fn add(&mut self, pending: Pending) {
        self.batch.push(pending);
        if self.batch.len() >= BATCH {
            self.submit();
        }
    }

    /// Whether a bad signature is already known (call [`Signatures::drain`] to name the
    /// earliest).
    pub fn failed(&self) -> bool {
        self.first_bad.is_some()
    }

    /// Checks everything queued and waits for every worker: the earliest bad signature, if any.
    pub fn drain(&mut self) -> Option<Bad> {
        if !self.batch.is_empty() {
            let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
            let bad = check_batch(&batch);
            self.note(bad);
        }
        while self.in_flight > 0 {
            self.receive_one();
        }
        self.first_bad
    }

    fn submit(&mut self) {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        let pool = match &mut self.pool {
            Some(pool) => pool,
            None => match Pool::start() {
                Some(pool) => self.pool.insert(pool),
                None => {
                    let bad = check_batch(&batch);
                    self.note(bad);
                    return;
                }
            },
        };
        let limit = 2 * pool.workers.len();
        pool.jobs
            .as_ref()
            .expect("jobs open while the pool lives")
            .send(batch)
            .expect("signature workers outlive the verifier");
        self.in_flight += 1;
        // Bounded memory: wait for a result when the workers are this far behind.
        while self.in_flight > limit {
            self.receive_one();
        }
    }

    fn receive_one(&mut self) {
        let pool = self.pool.as_ref().expect("results only come from a pool");
        let bad = pool
            .done
            .recv()
            .expect("signature workers outlive the verifier");
        self.in_flight -= 1;
        self.note(bad);
    }

    fn note(&mut self, bad: Option<Bad>) {
        if let Some(bad) = bad
            && self.first_bad.is_none_or(|first| bad.0 < first.0)
        {
            self.first_bad = Some(bad);
        }
    }
}

/// Worker threads, one per core; they stop when the job channel closes.
struct Pool {
    jobs: Option<Sender<Vec<Pending>>>,
    done: Receiver<Option<Bad>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts one worker per core, or none on a single core (batches are then checked
    /// in line).
    fn start() -> Option<Pool> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores < 2 {
            return None;
        }
        let (jobs, queue) = channel::<Vec<Pending>>();
        let (report, done) = channel();
        let queue = Arc::new(Mutex::new(queue));
        let workers = (0..cores.min(8))
            .map(|_| {
                let (queue, report) = (queue.clone(), report.clone());
                std::thread::spawn(move || {
                    loop {
                        let job = queue.lock().expect("queue lock").recv();
                        let Ok(batch) = job else { break };
                        if report.send(check_batch(&batch)).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        Some(Pool {
            jobs: Some(jobs),
            done,
            workers,
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// Checks a batch; on failure, finds the first bad signature one by one with `verify_strict`.
fn check_batch(batch: &[Pending]) -> Option<Bad> {
    if batch_equation_holds(batch) {
        return None;
    }
    batch
        .iter()
        .find(|p| p.key.verify_strict(&p.message, &p.signature).is_err())
        .map(|bad| (bad.seq, bad.signer))
}

/// The ed25519 batch equation `[Σ z·s]B = Σ z·R + Σ (z·h)·A` for random 128-bit `z`.
///
/// Unlike `ed25519_dalek::verify_batch`, the `A` terms of signatures by the same key are
/// summed into one point first. A chain is signed by one or two brain keys, so this halves
/// the points of the multiscalar multiplication and drops the costly full-width scalars:
/// about twice the rate. `s` must be canonical (as `verify_strict` requires).
#[allow(non_snake_case)]
fn batch_equation_holds(batch: &[Pending]) -> bool {
    let mut randomness = vec![0u8; 16 * batch.len()];
    getrandom::fill(&mut randomness).expect("operating system random source failed");
    let mut b_coefficient = Scalar::ZERO;
    let mut r_scalars = Vec::with_capacity(batch.len());
    let mut r_points = Vec::with_capacity(batch.len());
    let mut keys: Vec<([u8; 32], EdwardsPoint, Scalar)> = Vec::new();
    for (pending, z) in batch.iter().zip(randomness.chunks_exact(16)) {
        let z = Scalar::from(u128::from_le_bytes(z.try_into().expect("16 bytes")));
        let Some(s) =
            Option::<Scalar>::from(Scalar::from_canonical_bytes(*pending.signature.s_bytes()))
        else {
            return false;
        };
        let Some(R) = CompressedEdwardsY(*pending.signature.r_bytes()).decompress() else {
            return false;
        };
        let public = pending.key.as_bytes();
        let h = Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(pending.signature.r_bytes())
                .chain_update(public)
                .chain_update(&pending.message)
                .finalize()
                .into(),
        );
        b_coefficient += z * s;
        r_scalars.push(z);
        // The sign goes on the point, not on z: -z is a full-width scalar, and the
        // multiscalar multiplication skips the zero digits of a 128-bit one.
        r_points.push(-R);
        let zh = z * h;
        match keys.iter_mut().find(|(bytes, _, _)| bytes == public) {
            Some((_, _, coefficient)) => *coefficient += zh,
            None => keys.push((*public, pending.key.to_edwards(), zh)),
        }
    }
    // [Σ z·s]B + Σ z·(-R) - Σ c·A = 0, as one multiscalar multiplication.
    let scalars = once(b_coefficient)
        .chain(r_scalars)
        .chain(keys.iter().map(|(_, _, c)| -c));
    let points = once(ED25519_BASEPOINT_POINT)
        .chain(r_points)
        .chain(keys.iter().map(|(_, point, _)| *point));
    EdwardsPoint::vartime_multiscalar_mul(scalars, points).is_identity()
}
