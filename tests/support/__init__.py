"""What the unit and system tests share: datasets of real photos
(``datasets``, ``refresh_data``), images of every kind (``image_zoo``),
weight files (``weights``), running featurize and reading its outputs
(``outputs``), a GCS API server (``gcs_server``), Flink clusters
(``flink_cluster``), Airflow (``airflow_env``), peak RSS (``peak_rss``),
JAX features on the CPU (``jax_features``), MPS stand-ins (``fake_mps``),
comparisons (``arrays``), the fuzzers' parts (``fuzz``) and where things
are (``paths``)."""
