//! Data parallelism (`--devices`): each step's batch is split over several devices, each
//! computes the loss and gradients of its share on its own replica of the model, and the
//! gradients are summed on the first device, where the optimiser steps the one model.
//!
//! Built from burn's own multi-device pieces, in the way burn-train's multi-device learner
//! with the optimiser on the main device (`MultiDeviceOptim::OptimMainDevice`) uses them: a
//! replica of the model per device (`Module::to_device`), one thread per device, and
//! `GradientsParams::to_device` + `GradientsAccumulator` to bring the gradients home. burn
//! 0.22.1's DDP all-reduce (burn-collective) runs only on CUDA through NCCL and on its remote
//! backend, so it is not what this uses; the sum here is the same reduction done on one
//! device.
//!
//! Each shard's loss is weighted by its share of the batch, so the summed gradient is the
//! gradient of the batch's mean loss: a step on two devices equals a step on one device with
//! the whole batch, except where a layer looks across the batch. BatchNorm in training mode
//! normalises each device's shard by its own statistics, and its running statistics follow
//! the main device's shard (both as PyTorch's DDP without SyncBatchNorm); losses normalised
//! over a whole batch (the detector's per-positive mean, Dice over the classes present) see
//! one shard at a time.

use std::ops::Range;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;

use super::precision::Amp;

/// A batch of `n` over `k` devices: contiguous rows, sizes differing by at most one (the first
/// devices take the extra rows); empty for a device when `n < k`.
pub fn split(n: usize, k: usize) -> Vec<Range<usize>> {
    let mut start = 0;
    (0..k)
        .map(|i| {
            let len = n / k + usize::from(i < n % k);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

/// The `rows` of a batch stored row after row, `per_row` values each: a device's share.
pub fn share(values: &[f32], rows: &Range<usize>, per_row: usize) -> Vec<f32> {
    values[rows.start * per_row..rows.end * per_row].to_vec()
}

/// The devices a run steps on. The first holds the model, the optimiser and validation.
#[derive(Clone, Debug)]
pub struct Replicas {
    devices: Vec<Device>,
}

impl Replicas {
    /// `devices[0]` is the main device. Panics on an empty list (the settings never make one).
    pub fn new(devices: Vec<Device>) -> Self {
        assert!(!devices.is_empty(), "a run needs a device");
        Replicas { devices }
    }

    /// A run on one device.
    pub fn one(device: &Device) -> Self {
        Replicas { devices: vec![device.clone()] }
    }

    pub fn main(&self) -> &Device {
        &self.devices[0]
    }

    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// An eval-mode copy of `model` on each device, for a frozen prefix that runs without
    /// autodiff. One `valid()` per device, so each copy has BatchNorm statistics of its own
    /// (clones share theirs, and moving one clone would move the others').
    pub fn snapshots<M: Module>(&self, model: &M) -> Vec<M> {
        self.devices.iter().map(|d| model.valid().to_device(d)).collect()
    }

    /// The rows of a batch of `n` each device takes ([`split`]).
    pub fn split(&self, n: usize) -> Vec<Range<usize>> {
        split(n, self.devices.len())
    }

    /// The gradients of one batch of `n`: `loss(k, replica, rows)` is the mean loss of
    /// `rows` computed on device `k` with `replica` (the model itself on the main device, a
    /// copy of it elsewhere; inputs go on `replica`'s device, `self.devices()[k]`). Returns the
    /// gradients of the batch's mean loss on the main device, keyed by `model`'s parameters,
    /// and that loss's value. On one device this is `loss(0, model, 0..n)` and its backward,
    /// nothing more.
    pub fn backward<M, F>(&self, amp: &Amp, model: &M, n: usize, loss: F) -> (GradientsParams, f64)
    where
        M: Module,
        F: Fn(usize, M, Range<usize>) -> Tensor<1> + Sync,
    {
        let shards: Vec<(usize, Range<usize>)> =
            self.split(n).into_iter().enumerate().filter(|(_, r)| !r.is_empty()).collect();
        if let [(0, rows)] = shards.as_slice() {
            let l = loss(0, model.clone(), rows.clone());
            let value = l.clone().into_scalar::<f64>();
            return (GradientsParams::from_grads(amp.backward(l), model), value);
        }
        let main = self.main();
        let shard = |k: usize, replica: M, rows: Range<usize>| -> (GradientsParams, f64) {
            let share = rows.len() as f64 / n as f64;
            let l = loss(k, replica.clone(), rows).mul_scalar(share);
            let value = l.clone().into_scalar::<f64>();
            let grads = GradientsParams::from_grads(amp.backward(l), &replica);
            (grads.to_device(main, &replica), value)
        };
        let results: Vec<(GradientsParams, f64)> = std::thread::scope(|s| {
            // The other devices' replicas: `valid()` makes a copy with BatchNorm running
            // statistics of its own (a model and its clones share theirs, and `fork` would
            // move the shared ones), moved to the device and made trainable again with each
            // parameter's trainable flag. Their statistics updates are dropped: the main
            // device's shard updates the model's, as PyTorch's DDP keeps rank 0's buffers.
            let others: Vec<_> = shards
                .iter()
                .filter(|(k, _)| *k != 0)
                .map(|(k, rows)| {
                    let (k, rows, copy, shard) = (*k, rows.clone(), model.valid(), &shard);
                    let device = &self.devices[k];
                    s.spawn(move || shard(k, copy.to_device(device).train(), rows))
                })
                .collect();
            // The main device's shard on this thread, as a single-device step runs: burn keeps
            // BatchNorm's pending statistics update per thread, and merges it when the same
            // thread next reads them.
            let mut results: Vec<_> =
                shards.iter().filter(|(k, _)| *k == 0).map(|(_, rows)| shard(0, model.clone(), rows.clone())).collect();
            // A device that failed (burn's GPU backends panic) fails the step with its own
            // message, which the CLI turns into advice.
            results.extend(others.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))));
            results
        });
        let mut sum = GradientsAccumulator::<M>::new();
        let mut value = 0.0;
        for (grads, v) in results {
            sum.accumulate(model, grads);
            value += v;
        }
        (sum.grads(), value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_in_order() {
        let r = Replicas::new(vec![Device::flex(); 3]);
        assert_eq!(r.split(8), vec![0..3, 3..6, 6..8]);
        assert_eq!(r.split(2), vec![0..1, 1..2, 2..2]);
        assert_eq!(Replicas::one(&Device::flex()).split(5), vec![0..5]);
    }
}
