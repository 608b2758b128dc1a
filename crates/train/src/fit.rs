//! The loop every task shares: batch-size deduction, the learning-rate finder, the optimiser
//! and schedule, the backward pass, and the epoch loop with early stopping, pruning,
//! checkpoints and the time budget. A task implements [`Task`] (a batch of training items, the
//! loss of a batch, evaluation and the finishing step), as a Burn model implements `TrainStep`
//! for Burn's `Learner`; this module decides everything else and imports no task.

use std::collections::BTreeMap;
use std::time::Instant;

use autodl_api::{
    BatchLimits, EpochRecord, OptimizerKind, PluginError, Progress, ScheduleKind, StepMeasure,
    TrialSpec, TrialStatus,
};
use burn::module::AutodiffModule;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::lr_find;
use crate::model_dir::ModelMeta;
use crate::schedule::{Schedule, schedule};
use autodl_api::sample_seed;

/// What a task supplies to [`fit`]: batches, their loss, evaluation and the finishing step.
/// The loop owns epochs, the optimiser, the schedule, the budget, pruning, checkpoints and the
/// backward pass.
pub trait Task<B: AutodiffBackend, M: AutodiffModule<B>> {
    /// A training batch on the device.
    type Batch;
    /// What evaluation keeps of an epoch for the finishing step (metrics, matrices, curves).
    type Payload;

    /// Training items; a batch names some of them by index.
    fn train_len(&self) -> usize;

    /// Name of the ranking metric [`Task::evaluate`] returns, as the leaderboard shows it.
    fn metric_name(&self) -> &str;

    /// The training items `indices`, augmented with `epoch`'s randomness, as a batch.
    fn batch(&self, indices: &[usize], epoch: u64, device: &B::Device) -> Self::Batch;

    /// The loss of `model` on a batch: a one-element tensor the loop takes the gradients of.
    fn loss(&self, model: &M, batch: Self::Batch, device: &B::Device) -> Tensor<B, 1>;

    /// Scores a model (without autodiff) on the validation split.
    fn evaluate(
        &self,
        model: &M::InnerModule,
        device: &B::Device,
    ) -> Result<Evaluation<Self::Payload>, PluginError>;

    /// Writes the model folder and reports for the kept epoch (its weights are already in the
    /// trial folder) and returns every metric of it by name.
    fn finish(
        &self,
        fitted: &Fitted<()>,
        best: Self::Payload,
    ) -> Result<BTreeMap<String, f64>, PluginError>;
}

/// The value of a one-element loss tensor, on the host (NaN when it holds none).
pub fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_data().iter::<f64>().next().unwrap_or(f64::NAN)
}

/// One optimiser step: the task's loss on the batch `indices`, its gradients, the update.
/// Returns the model and the loss.
#[allow(clippy::too_many_arguments)]
fn train_step<B, M, O, T>(
    task: &T,
    model: M,
    optim: &mut O,
    lr: f64,
    indices: &[usize],
    epoch: u64,
    device: &B::Device,
) -> (M, f64)
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
    T: Task<B, M>,
{
    let batch = task.batch(indices, epoch, device);
    let loss = task.loss(&model, batch, device);
    let value = scalar(loss.clone());
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (optim.step(lr, model, grads), value)
}

/// What [`Task::evaluate`] reports for one epoch.
pub struct Evaluation<P> {
    /// Validation loss.
    pub loss: f64,
    /// The ranking metric, higher is better.
    pub metric: f64,
    /// Whatever the task keeps of the best epoch (metrics, matrices, curves).
    pub payload: P,
}

/// The outcome of [`fit`].
pub struct Fitted<P> {
    /// Every finished epoch.
    pub epochs: Vec<EpochRecord>,
    /// The best epoch: its metric, number and payload. Its weights are in the trial folder.
    pub best: (f64, u32, P),
    /// Completed, or pruned.
    pub status: TrialStatus,
    /// Batch size used.
    pub batch_size: usize,
    /// Peak learning rate used.
    pub learning_rate: f64,
}

impl<P> Fitted<P> {
    /// Splits off the best epoch's payload, keeping its metric and number.
    pub fn into_payload(self) -> (Fitted<()>, P) {
        let (metric, epoch, payload) = self.best;
        (
            Fitted {
                epochs: self.epochs,
                best: (metric, epoch, ()),
                status: self.status,
                batch_size: self.batch_size,
                learning_rate: self.learning_rate,
            },
            payload,
        )
    }
}

/// The task-independent settings of [`fit`].
pub struct FitOptions<'a> {
    /// The trial.
    pub spec: &'a TrialSpec,
    /// Where progress goes.
    pub progress: &'a dyn Progress,
    /// Learning rate when the budget is too small for the finder.
    pub default_lr: f64,
}

/// `checkpoint.json`, defined with the other boundary files in `autodl-api`.
pub use autodl_api::{CHECKPOINT, Checkpoint};

fn checkpoint_stem(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("checkpoint")
}

/// The optimiser's state (Adam's moments and step count) beside the checkpoint, so that a
/// resumed trial takes the very steps an uninterrupted one would.
fn optimizer_stem(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("checkpoint-optimizer")
}

/// Memory the batch probes read: on CUDA the device's free memory from the driver (what other
/// processes hold is already gone from it), on the CPU the process's peak resident memory and
/// the machine's available RAM.
struct MemoryGauge {
    /// Free device memory before the probe model existed, on CUDA.
    device_free_at_start: Option<u64>,
    backend: String,
}

impl MemoryGauge {
    fn new(backend: &str) -> Self {
        MemoryGauge {
            device_free_at_start: autodl_backend::device_memory(backend).map(|(free, _)| free),
            backend: backend.to_owned(),
        }
    }

    /// Bytes a batch may use: free device memory, or available RAM.
    fn free(&self) -> Option<u64> {
        self.device_free_at_start.or_else(available_ram)
    }

    /// Starts measuring one step.
    fn reset(&self) {
        if self.device_free_at_start.is_none() {
            // Writing 5 to clear_refs resets VmHWM (Linux 4.0+); failure only makes the figure coarser.
            let _ = std::fs::write("/proc/self/clear_refs", "5");
        }
    }

    /// Peak bytes of the step just measured. On CUDA the runtime's memory pool keeps what a
    /// step reserved, so the drop in free memory since the start is the peak so far.
    fn peak(&self) -> Option<u64> {
        match self.device_free_at_start {
            Some(start) => autodl_backend::device_memory(&self.backend)
                .map(|(free, _)| start.saturating_sub(free)),
            None => peak_rss(),
        }
    }
}

/// Available RAM in bytes, on Linux.
fn available_ram() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Peak resident memory of this process in bytes since the last reset, on Linux.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Trains with the optimiser, weight decay and schedule `spec.training` names.
pub fn fit<B, M, T>(
    opts: &FitOptions<'_>,
    device: &B::Device,
    build: &dyn Fn() -> Result<M, PluginError>,
    task: &T,
) -> Result<Fitted<T::Payload>, PluginError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    T: Task<B, M>,
{
    let spec = opts.spec;
    let wd = spec.training.weight_decay as f32;
    match spec.training.optimizer {
        OptimizerKind::AdamW => fit_with(
            opts,
            device,
            build,
            &|| autodl_backend::optim::Adam::adamw(wd).init::<B, M>(),
            task,
        ),
        OptimizerKind::Sgd => fit_with(
            opts,
            device,
            build,
            &|| {
                SgdConfig::new()
                    .with_momentum(Some(
                        MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
                    ))
                    .with_weight_decay(Some(WeightDecayConfig::new(wd)))
                    .init::<B, M>()
            },
            task,
        ),
    }
}

fn fit_with<B, M, O, T>(
    opts: &FitOptions<'_>,
    device: &B::Device,
    build: &dyn Fn() -> Result<M, PluginError>,
    new_optim: &dyn Fn() -> O,
    task: &T,
) -> Result<Fitted<T::Payload>, PluginError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
    T: Task<B, M>,
{
    let (spec, progress, n_train) = (opts.spec, opts.progress, task.train_len());
    let start = Instant::now();
    let schedule_kind = match spec.training.schedule {
        ScheduleKind::OneCycle => Schedule::OneCycle,
        ScheduleKind::Cosine => Schedule::Cosine,
    };

    // A restarted trial (`resume`) goes on from its last checkpoint, at the batch size the
    // orchestrator now gives it.
    let resume = if spec.resume {
        Checkpoint::load(&spec.out_dir)?
    } else {
        None
    };
    let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();

    // Batch size: fixed, or deduced by measuring real steps on a throwaway model.
    let batch_size = match spec
        .batch_size
        .or(resume.as_ref().map(|c| c.batch_size as u32))
    {
        Some(b) => b as usize,
        None => {
            // The planner checked the name against the registry.
            let deducer = autodl_api::batch_deducer(&spec.batch_deducer);
            match deducer {
                None => {
                    return Err(PluginError::Training(format!(
                        "no batch deducer `{}` is compiled in",
                        spec.batch_deducer
                    )));
                }
                Some(d) => {
                    // At least eight optimiser steps an epoch: on small datasets the number of
                    // updates, not images per second, limits what a short budget can learn.
                    let max = (n_train / 8).clamp(2, 64) as u32;
                    let gauge = MemoryGauge::new(&spec.backend);
                    let limits = BatchLimits {
                        min: 8.min(max),
                        max,
                        free_bytes: gauge.free(),
                        memory_fraction: 0.8,
                    };
                    // One throwaway model serves every probe: building one can mean reading
                    // pretrained weights, which costs more than a step.
                    let mut slot = Some((build()?, new_optim()));
                    let mut probe = |b: u32| -> Result<StepMeasure, PluginError> {
                        let (mut model, mut optim) = slot.take().ok_or_else(|| {
                            PluginError::Other("batch probe lost its model".into())
                        })?;
                        let idx: Vec<usize> = (0..b as usize).map(|i| i % n_train).collect();
                        // The first step at a size pays for allocation; time the second.
                        (model, _) = train_step(task, model, &mut optim, 1e-6, &idx, 0, device);
                        gauge.reset();
                        let t = Instant::now();
                        (model, _) = train_step(task, model, &mut optim, 1e-6, &idx, 0, device);
                        let _ = B::sync(device);
                        let measure = StepMeasure {
                            batch_size: b,
                            seconds: t.elapsed().as_secs_f64(),
                            peak_bytes: gauge.peak(),
                        };
                        slot = Some((model, optim));
                        Ok(measure)
                    };
                    d.deduce(&mut probe, &limits)? as usize
                }
            }
        }
    }
    .clamp(1, n_train.max(1));
    progress.message(&format!(
        "batch size {batch_size} (chosen in {:.1}s)",
        start.elapsed().as_secs_f64()
    ));

    let learning_rate = match spec
        .learning_rate
        .or(resume.as_ref().map(|c| c.learning_rate))
    {
        Some(lr) => lr,
        None => find_lr(opts, device, build, new_optim, task, batch_size)?,
    };

    let mut model = build()?;
    // Fine-tuning: a fresh run starts from the weights of the model it was given.
    if let (None, Some(dir)) = (&resume, &spec.init_from) {
        model = model
            .load_file(ModelMeta::weights_stem(dir), &recorder, device)
            .map_err(|e| {
                PluginError::Other(format!(
                    "cannot start from the pretrained model {}: {e}",
                    dir.display()
                ))
            })?;
        progress.message(&format!("starting from the weights of {}", dir.display()));
    }
    let mut optim = new_optim();
    let steps_per_epoch = n_train.div_ceil(batch_size);
    let mut planned_epochs = spec.max_epochs as usize;
    let mut epochs = Vec::new();
    let mut best: Option<(f64, u32, T::Payload)> = None;
    let mut since_best = 0;
    let mut first_epoch = 1;
    // Epochs before the current learning-rate cycle, and whether this run starts a new cycle
    // (the first run, or a later rung of successive halving) and so plans it from its budget.
    let mut cycle_start = 0;
    let mut new_cycle = true;
    // A later cycle (a rung of successive halving) peaks at half the first one's rate.
    let peak_after = |cycle_start: u32| {
        if cycle_start > 0 {
            0.5 * learning_rate
        } else {
            learning_rate
        }
    };
    if let Some(c) = &resume {
        let load = |stem: std::path::PathBuf| {
            build().and_then(|m| {
                m.load_file(stem, &recorder, device)
                    .map_err(|e| PluginError::Other(format!("cannot load the checkpoint: {e}")))
            })
        };
        model = load(checkpoint_stem(&spec.out_dir))?;
        // Checkpoints written before the optimiser's state was kept start it afresh.
        let stem = optimizer_stem(&spec.out_dir);
        if stem.with_extension("mpk").is_file() {
            let record = recorder.load(stem, device).map_err(|e| {
                PluginError::Other(format!("cannot load the optimiser's checkpoint: {e}"))
            })?;
            optim = optim.load_record(record);
        }
        // The best epoch's payload is not stored: evaluating its weights again gives it back.
        if let Some(b) = c.best_epoch {
            let eval = task.evaluate(
                &load(ModelMeta::weights_stem(&spec.out_dir))?.valid(),
                device,
            )?;
            best = Some((eval.metric, b, eval.payload));
            since_best = c.epoch.saturating_sub(b);
        }
        epochs = c.epochs.clone();
        first_epoch = c.epoch + 1;
        if spec.rung > c.rung {
            // Successive halving gave this trial another rung: a new cycle at half the peak
            // rate from where it stopped, with its patience renewed.
            cycle_start = c.epoch;
            planned_epochs = (spec.max_epochs.saturating_sub(c.epoch) as usize).max(1);
            since_best = 0;
            progress.message(&format!(
                "continuing after epoch {} (rung {}): a new learning-rate cycle peaking at {:.2e}",
                c.epoch,
                spec.rung,
                peak_after(cycle_start)
            ));
        } else {
            cycle_start = c.cycle_start;
            planned_epochs = c.planned_epochs;
            new_cycle = false;
            progress.message(&format!(
                "resuming after epoch {} at batch size {batch_size}",
                c.epoch
            ));
        }
    }
    let peak = peak_after(cycle_start);
    let mut status = TrialStatus::Completed;
    let mut order: Vec<usize> = (0..n_train).collect();
    let reserve = 0.05 * spec.time_budget_secs + 1.0;
    let stop_file = spec.out_dir.join(autodl_api::STOP_FILE);
    for epoch in first_epoch..=spec.max_epochs {
        let epoch_start = Instant::now();
        let mut rng = StdRng::seed_from_u64(sample_seed(spec.seed, epoch as u64, u64::MAX));
        // Each epoch's order is a function of (seed, epoch) alone, not of the epochs before:
        // a trial resumed from its checkpoint visits the batches an uninterrupted one would.
        for (i, o) in order.iter_mut().enumerate() {
            *o = i;
        }
        rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rng);
        let mut loss_sum = 0.0;
        for (s, idx) in order.chunks(batch_size).enumerate() {
            let step = (epoch - cycle_start - 1) as usize * steps_per_epoch + s;
            let lr = schedule(schedule_kind, peak, step, planned_epochs * steps_per_epoch);
            let loss;
            (model, loss) = train_step(task, model, &mut optim, lr, idx, epoch as u64, device);
            if !loss.is_finite() {
                return Err(PluginError::Training(format!(
                    "loss diverged (not finite) at epoch {epoch}"
                )));
            }
            loss_sum += loss * idx.len() as f64;
        }
        let eval = task.evaluate(&model.valid(), device)?;
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / n_train as f64,
            val_loss: eval.loss,
            metric: eval.metric,
            elapsed_secs: start.elapsed().as_secs_f64(),
        };
        progress.epoch(&record);
        epochs.push(record);
        if best.as_ref().is_none_or(|b| eval.metric > b.0) {
            model
                .clone()
                .save_file(ModelMeta::weights_stem(&spec.out_dir), &recorder)
                .map_err(|e| PluginError::Other(format!("cannot save weights: {e}")))?;
            best = Some((eval.metric, epoch, eval.payload));
            since_best = 0;
        } else {
            since_best += 1;
        }
        model
            .clone()
            .save_file(checkpoint_stem(&spec.out_dir), &recorder)
            .map_err(|e| PluginError::Other(format!("cannot save the checkpoint: {e}")))?;
        recorder
            .record(optim.to_record(), optimizer_stem(&spec.out_dir))
            .map_err(|e| {
                PluginError::Other(format!("cannot save the optimiser's checkpoint: {e}"))
            })?;
        let checkpoint = Checkpoint {
            epoch,
            batch_size,
            learning_rate,
            planned_epochs,
            epochs: epochs.clone(),
            best_epoch: best.as_ref().map(|b| b.1),
            rung: spec.rung,
            cycle_start,
        };
        checkpoint.save(&spec.out_dir)?;
        if since_best >= spec.patience {
            progress.message(&format!("early stop after {epoch} epochs"));
            break;
        }
        // The orchestrator's pruner asks a trial to stop by creating this file.
        if stop_file.exists() {
            status = TrialStatus::Pruned(format!("stopped by the pruner after epoch {epoch}"));
            break;
        }
        // Plan the schedule from the first epoch's measured cost, then stop before the budget runs out.
        let epoch_secs = epoch_start.elapsed().as_secs_f64();
        let left = spec.time_budget_secs - start.elapsed().as_secs_f64() - reserve;
        if new_cycle && epoch == cycle_start + 1 {
            let fit = (left / epoch_secs).floor() as usize + 1;
            planned_epochs = planned_epochs.min(fit.max(1));
        }
        if (epoch - cycle_start) as usize >= planned_epochs || left < epoch_secs * 1.1 {
            break;
        }
    }
    let best = best.ok_or_else(|| PluginError::Budget("no epoch finished".to_owned()))?;
    Ok(Fitted {
        epochs,
        best,
        status,
        batch_size,
        learning_rate,
    })
}

/// The learning-rate finder's valley on a throwaway model, or the family default when the
/// budget cannot pay for a readable sweep.
fn find_lr<B, M, O, T>(
    opts: &FitOptions<'_>,
    device: &B::Device,
    build: &dyn Fn() -> Result<M, PluginError>,
    new_optim: &dyn Fn() -> O,
    task: &T,
    batch_size: usize,
) -> Result<f64, PluginError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
    T: Task<B, M>,
{
    let (spec, progress, n_train) = (opts.spec, opts.progress, task.train_len());
    let lr_start = Instant::now();
    let mut model = build()?;
    let mut optim = new_optim();
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let pick = |rng: &mut StdRng| -> Vec<usize> {
        (0..batch_size)
            .map(|_| rng.random_range(0..n_train))
            .collect()
    };
    // Time one step to size the sweep: it may take a tenth of the trial's budget, between 12
    // and 100 steps; below 12 the curve is too short to read.
    (model, _) = train_step(task, model, &mut optim, 1e-6, &pick(&mut rng), 0, device);
    let t = Instant::now();
    (model, _) = train_step(task, model, &mut optim, 1e-6, &pick(&mut rng), 0, device);
    let affordable = (0.1 * spec.time_budget_secs / t.elapsed().as_secs_f64().max(1e-3)) as usize;
    // A few fixed sweep lengths, so that a small change in machine load does not change the
    // sweep, and with it the learning rate: the same seed should give the same run.
    let n = [100, 50, 25, 12]
        .into_iter()
        .find(|&tier| affordable >= tier)
        .unwrap_or(affordable);
    if n < 12 {
        let lr = opts.default_lr;
        progress.message(&format!(
            "learning rate {lr:.2e} (family default: the budget allows only {n} finder steps)"
        ));
        return Ok(lr);
    }
    let lrs = lr_find::sweep(1e-5, 1.0, n);
    let mut losses = Vec::new();
    // Stop once the smoothed loss passes four times its best, as fastai does; one batch's loss
    // is too noisy a yardstick (a detection batch without objects has almost none).
    let (mut smoothed, mut best) = (None::<f64>, f64::INFINITY);
    for (step, &lr) in lrs.iter().enumerate() {
        let loss;
        (model, loss) = train_step(
            task,
            model,
            &mut optim,
            lr,
            &pick(&mut rng),
            step as u64 + 1,
            device,
        );
        if !loss.is_finite() {
            break;
        }
        let s = smoothed.map_or(loss, |s| 0.7 * s + 0.3 * loss);
        smoothed = Some(s);
        if step >= 5 && s > 4.0 * best {
            break;
        }
        best = best.min(s);
        losses.push(loss);
    }
    let csv: String = std::iter::once("lr,loss\n".to_owned())
        .chain(lrs.iter().zip(&losses).map(|(lr, l)| format!("{lr},{l}\n")))
        .collect();
    let path = spec.out_dir.join("lr_find.csv");
    std::fs::write(&path, csv).map_err(|source| PluginError::Io { path, source })?;
    let (lr, rule) = lr_find::suggest(&lrs[..losses.len()], &losses)
        .unwrap_or((opts.default_lr, lr_find::Rule::MinOverTen));
    // The curve as a picture beside the model, for a person to check the choice.
    if let Ok(svg) = autodl_report::lr_chart(&lrs[..losses.len()], &losses, lr) {
        let path = spec.out_dir.join("lr_find.svg");
        std::fs::write(&path, svg).map_err(|source| PluginError::Io { path, source })?;
    }
    progress.message(&format!(
        "learning rate {lr:.2e} by the {rule:?} rule ({} steps, {:.1}s)",
        losses.len(),
        lr_start.elapsed().as_secs_f64()
    ));
    Ok(lr)
}

/// Fits `task` and finishes it: the trial's whole training after its data is read. `start` is
/// when the trial began (see [`crate::trial::begin`]).
pub fn train<B, M, T>(
    opts: &FitOptions<'_>,
    start: std::time::Instant,
    device: &B::Device,
    build: &dyn Fn() -> Result<M, PluginError>,
    task: &T,
) -> Result<autodl_api::TrialResult, PluginError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    T: Task<B, M>,
{
    let (fitted, best) = fit(opts, device, build, task)?.into_payload();
    let metrics = task.finish(&fitted, best)?;
    Ok(autodl_api::TrialResult {
        status: fitted.status,
        metric_name: task.metric_name().to_owned(),
        metric: Some(fitted.best.0),
        metrics,
        epochs: fitted.epochs,
        best_epoch: Some(fitted.best.1),
        batch_size: fitted.batch_size as u32,
        learning_rate: fitted.learning_rate,
        train_secs: start.elapsed().as_secs_f64(),
        model_dir: Some(opts.spec.out_dir.clone()),
    })
}
