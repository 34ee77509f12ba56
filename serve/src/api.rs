//! The daemon's response bodies, typed: the JSON keys the README promises are the field names
//! here (issue 21; they were built with `json!` in each handler). The fieldkit API
//! (`/v1/...`) first, then the Open Inference Protocol (KServe v2) bodies.

use std::path::PathBuf;

use fieldkit_core::card::Task;
use fieldkit_runtime::{ClassScore, LabeledDetection};
use serde::Serialize;

/// Every error: `{"error": "..."}` with the HTTP status saying which kind.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `POST /v1/models/{name}/predict`.
#[derive(Debug, Serialize)]
pub struct PredictResponse {
    pub model: String,
    pub version: String,
    /// The image's size in pixels (boxes are in these pixels).
    pub width: u32,
    pub height: u32,
    pub timing: PredictTiming,
    /// `"kind"` and the list it names.
    #[serde(flatten)]
    pub output: PredictOutput,
}

#[derive(Debug, Serialize)]
pub struct PredictTiming {
    pub queue_ms: f64,
    pub preprocess_ms: f64,
    pub inference_ms: f64,
    pub postprocess_ms: f64,
    pub total_ms: f64,
}

/// `{"kind": "detections", "detections": [...]}` and its classifier, embedding and
/// segmentation siblings.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PredictOutput {
    Detections {
        detections: Vec<LabeledDetection>,
    },
    Classes {
        classes: Vec<ClassScore>,
    },
    Features {
        features: Vec<f32>,
    },
    /// A segmenter's class map at the photo's size (the answer's `width` × `height`),
    /// run-length encoded row by row as `[class, run]` pairs, and each class's share of it.
    Segmentation {
        rle: Vec<[u32; 2]>,
        coverage: Vec<fieldkit_runtime::ClassCoverage>,
    },
}

impl From<fieldkit_runtime::Output> for PredictOutput {
    fn from(o: fieldkit_runtime::Output) -> Self {
        use fieldkit_runtime::Output;
        match o {
            Output::Detections(detections) => PredictOutput::Detections { detections },
            Output::Classes(classes) => PredictOutput::Classes { classes },
            Output::Features(features) => PredictOutput::Features { features },
            Output::Segmentation(m) => {
                PredictOutput::Segmentation { rle: fieldkit_core::segment::rle_encode(&m.ids), coverage: m.coverage }
            }
        }
    }
}

/// `GET /v1/models`.
#[derive(Debug, Serialize)]
pub struct ModelList {
    pub models: Vec<ModelEntry>,
}

#[derive(Debug, Serialize)]
pub struct ModelEntry {
    pub name: String,
    pub version: String,
    pub path: PathBuf,
    pub sha256: String,
    pub task: Task,
    pub classes: Vec<String>,
    /// `[1, 3, H, W]`.
    pub input: Vec<usize>,
    /// Requests admitted and not finished.
    pub in_flight: usize,
}

/// `POST /v1/models`: the model as loaded.
#[derive(Debug, Serialize)]
pub struct Loaded {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// `DELETE /v1/models/{name}`.
#[derive(Debug, Serialize)]
pub struct Unloaded {
    pub name: String,
    pub unloaded: bool,
}

/// `GET /v2/health/live`.
#[derive(Debug, Serialize)]
pub struct Live {
    pub live: bool,
}

/// `GET /v2/health/ready` (and `/v2/models/{name}/ready` with the name).
#[derive(Debug, Serialize)]
pub struct Ready {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v2`.
#[derive(Debug, Serialize)]
pub struct ServerMetadata {
    pub name: &'static str,
    pub version: &'static str,
    pub extensions: Vec<String>,
}

/// `GET /v2/models/{name}`.
#[derive(Debug, Serialize)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: &'static str,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

#[derive(Debug, Serialize)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<usize>,
}

/// `POST /v2/models/{name}/infer`.
#[derive(Debug, Serialize)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<InferOutput>,
}

#[derive(Debug, Serialize)]
pub struct InferOutput {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys the README names, checked on the serialized bodies.
    #[test]
    fn predict_body_keeps_its_keys() {
        let body = PredictResponse {
            model: "weeds".into(),
            version: "1".into(),
            width: 640,
            height: 480,
            timing: PredictTiming {
                queue_ms: 0.1,
                preprocess_ms: 1.0,
                inference_ms: 2.0,
                postprocess_ms: 0.2,
                total_ms: 3.4,
            },
            output: PredictOutput::Features { features: vec![0.5] },
        };
        let v = serde_json::to_value(&body).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["features", "height", "kind", "model", "timing", "version", "width"]);
        assert_eq!(v["kind"], "features");
        let timing: Vec<&str> = v["timing"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(timing, ["inference_ms", "postprocess_ms", "preprocess_ms", "queue_ms", "total_ms"]);
        let ready = serde_json::to_value(Ready { name: None, ready: false, error: Some("no model loaded".into()) });
        assert_eq!(ready.unwrap(), serde_json::json!({"ready": false, "error": "no model loaded"}));
    }

    /// A segmenter's answer: the run-length map decodes back to the class map, at the
    /// answer's width x height.
    #[test]
    fn a_class_map_goes_out_run_length_encoded() {
        use fieldkit_runtime::{ClassCoverage, ClassMap, Output};
        let ids = vec![0u8, 0, 1, 1, 1, 2, 0, 0];
        let cover = |index, name: &str, fraction| ClassCoverage { index, name: name.into(), fraction };
        let coverage = vec![cover(0, "soil", 0.5), cover(1, "crop", 0.375), cover(2, "weed", 0.125)];
        let map = ClassMap { width: 4, height: 2, ids: ids.clone(), coverage };
        let v = serde_json::to_value(PredictOutput::from(Output::Segmentation(map))).unwrap();
        assert_eq!(v["kind"], "segmentation");
        let runs: Vec<[u32; 2]> = serde_json::from_value(v["rle"].clone()).unwrap();
        assert_eq!(fieldkit_core::segment::rle_decode(&runs), ids);
        assert_eq!(v["coverage"][2]["name"], "weed");
        assert!(v.get("width").is_none(), "the answer carries the size once");
    }
}
