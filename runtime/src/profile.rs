//! Where a plan spends its time: every node of the optimized tract plan timed over a number of
//! runs, grouped by operator. This is how `fieldkit bench --profile` explains a slow model (a
//! quantized convolution that falls back to a generic kernel shows up here, not in p50).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::Cost;

use crate::engine::Session;
use crate::error::{Result, RuntimeError};

/// Time spent in one node (or one operator type), mean per run.
#[derive(Debug, Clone, Serialize)]
pub struct NodeTime {
    pub name: String,
    pub op: String,
    pub ms: f64,
    /// Nodes folded into this row (1 for a node; the count for an operator).
    pub count: usize,
    /// Multiply-adds per run by tract's cost model (its `FMA` cost), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fma: Option<u64>,
    /// tract's description of the node (for a matrix product: m, k, n and the kernel).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl NodeTime {
    /// Arithmetic rate (2 flops per multiply-add): how far a node is from the machine's peak.
    pub fn gflops(&self) -> Option<f64> {
        self.fma.filter(|_| self.ms > 0.0).map(|f| 2.0 * f as f64 / self.ms / 1e6)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub runs: usize,
    /// Mean wall time of a whole run.
    pub total_ms: f64,
    /// Every node, slowest first.
    pub nodes: Vec<NodeTime>,
    /// Per operator type, slowest first.
    pub ops: Vec<NodeTime>,
}

impl Session {
    /// Runs `chw` `runs` times (after one warm-up) timing each node of the plan.
    pub fn profile(&mut self, chw: &[f32], runs: usize) -> Result<Profile> {
        let input = self.input_tensor(chw)?;
        let runs = runs.max(1);
        let mut about: BTreeMap<usize, (Option<u64>, String)> = BTreeMap::new();
        {
            let model = self.state_mut().plan().model();
            for node in model.nodes() {
                let facts =
                    model.node_input_facts(node.id).map_err(RuntimeError::inference("reading a node's inputs"))?;
                let fma = node.op.cost(&facts).ok().and_then(|costs| {
                    let counts: Vec<u64> = costs
                        .iter()
                        .filter(|(c, _)| matches!(c, Cost::FMA(_)))
                        .filter_map(|(_, d)| d.to_i64().ok().and_then(|v| u64::try_from(v).ok()))
                        .collect();
                    (!counts.is_empty()).then(|| counts.iter().sum())
                });
                about.insert(node.id, (fma, node.op.info().unwrap_or_default().join("; ")));
            }
        }
        let mut per_node: BTreeMap<usize, (String, String, f64)> = BTreeMap::new();
        let mut total = 0.0;
        for run in 0..=runs {
            let t0 = Instant::now();
            let mut times: Vec<(usize, String, String, f64)> = Vec::new();
            self.state_mut()
                .run_plan_with_eval(tvec!(input.clone().into_tvalue()), |ctx, state, node, inputs| {
                    let t = Instant::now();
                    let out = tract_onnx::tract_core::plan::eval(ctx, state, node, inputs);
                    times.push((
                        node.id,
                        node.name.clone(),
                        node.op().name().to_string(),
                        t.elapsed().as_secs_f64() * 1e3,
                    ));
                    out
                })
                .map_err(RuntimeError::inference("profiling the plan"))?;
            if run == 0 {
                continue; // warm-up: lazy packing and allocation
            }
            total += t0.elapsed().as_secs_f64() * 1e3;
            for (id, name, op, ms) in times {
                per_node.entry(id).or_insert((name, op, 0.0)).2 += ms;
            }
        }
        let n = runs as f64;
        let mut nodes: Vec<NodeTime> = per_node
            .into_iter()
            .map(|(id, (name, op, ms))| {
                let (fma, detail) = about.remove(&id).unwrap_or_default();
                NodeTime { name, op, ms: ms / n, count: 1, fma, detail }
            })
            .collect();
        nodes.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        let mut by_op: BTreeMap<String, (f64, usize, Option<u64>)> = BTreeMap::new();
        for t in &nodes {
            let e = by_op.entry(t.op.clone()).or_default();
            e.0 += t.ms;
            e.1 += 1;
            if let Some(f) = t.fma {
                e.2 = Some(e.2.unwrap_or(0) + f);
            }
        }
        let mut ops: Vec<NodeTime> = by_op
            .into_iter()
            .map(|(op, (ms, count, fma))| NodeTime { name: op.clone(), op, ms, count, fma, detail: String::new() })
            .collect();
        ops.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        Ok(Profile { runs, total_ms: total / n, nodes, ops })
    }
}
