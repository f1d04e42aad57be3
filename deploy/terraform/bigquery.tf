# Datasets raw, staging and marts, and the raw table the BigQuery subscription
# writes into. The table schema is read from schemas/book_media_events.json, the
# file that `collector schemas` generates from the event models, so this module
# contains no copy of the column list.

locals {
  datasets = {
    raw     = "Events as the collector published them, one row per Pub/Sub message."
    staging = "Typed events, deduplicated by event_id."
    marts   = "Daily active users, content completion and revenue."
  }
}

resource "google_bigquery_dataset" "this" {
  #checkov:skip=CKV_GCP_81:Google-managed encryption is enough for analytics events, and a customer-managed key adds a Cloud KMS key, its IAM and its cost.
  for_each = local.datasets

  dataset_id  = each.key
  location    = var.bigquery_location
  description = each.value

  depends_on = [google_project_service.enabled]
}

resource "google_bigquery_table" "raw_events" {
  #checkov:skip=CKV_GCP_80:Google-managed encryption is enough for analytics events, and a customer-managed key adds a Cloud KMS key, its IAM and its cost.
  dataset_id  = google_bigquery_dataset.this["raw"].dataset_id
  table_id    = "book_media_events"
  description = "Raw events from the collector, partitioned by the server receive date so that client clocks cannot scatter rows."

  schema = file("${path.module}/../../schemas/book_media_events.json")

  time_partitioning {
    type  = "DAY"
    field = "received_at"
  }

  clustering = ["event_name"]

  deletion_protection = var.deletion_protection
}

# The Pub/Sub service agent writes rows into the raw table only.
resource "google_bigquery_table_iam_member" "pubsub_writes_raw" {
  dataset_id = google_bigquery_table.raw_events.dataset_id
  table_id   = google_bigquery_table.raw_events.table_id
  role       = "roles/bigquery.dataEditor"
  member     = local.pubsub_service_agent
}
