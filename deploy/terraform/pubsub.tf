# Topics: accepted events, events the collector rejected, and messages the
# BigQuery subscription could not write. A topic with no subscription drops what
# is published to it, so each of them has at least one subscription below.

resource "google_pubsub_topic" "events" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption is enough for analytics events, and a customer-managed key adds a Cloud KMS key, its IAM and its cost.
  name = var.topic_name

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic" "invalid" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption is enough for rejected analytics events, and a customer-managed key adds a Cloud KMS key, its IAM and its cost.
  name = "${var.topic_name}-invalid"

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption is enough for analytics events, and a customer-managed key adds a Cloud KMS key, its IAM and its cost.
  name = "${var.topic_name}-dead-letter"

  depends_on = [google_project_service.enabled]
}

# The BigQuery subscription writes each message (one JSON row) into the raw table.
# use_table_schema maps the row's fields to the table's columns, and write_metadata
# fills subscription_name, message_id, publish_time and attributes. A row the
# table rejects is retried, then moved to the dead-letter topic.
resource "google_pubsub_subscription" "bigquery" {
  name  = "${var.topic_name}-bigquery"
  topic = google_pubsub_topic.events.id

  bigquery_config {
    table            = "${google_bigquery_table.raw_events.project}.${google_bigquery_table.raw_events.dataset_id}.${google_bigquery_table.raw_events.table_id}"
    use_table_schema = true
    write_metadata   = true
    # A field the table lacks is an error, not a silent loss: such rows go to the
    # dead-letter topic, and the table gets the column before the collector that
    # sends it is deployed.
    drop_unknown_fields = false
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = 10
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  message_retention_duration = "604800s"

  # An empty ttl means the subscription never expires, even after 31 quiet days.
  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_bigquery_table_iam_member.pubsub_writes_raw,
    google_pubsub_topic_iam_member.pubsub_publishes_dead_letters,
  ]
}

# Archive subscriptions write raw messages to Cloud Storage as newline-delimited
# JSON (the text format puts one message per line), so any day can be reloaded
# with `bq load --source_format=NEWLINE_DELIMITED_JSON`.
locals {
  archive_subscriptions = {
    events = {
      topic  = google_pubsub_topic.events.id
      prefix = "events/"
    }
    invalid = {
      topic  = google_pubsub_topic.invalid.id
      prefix = "invalid/"
    }
    dead-letter = {
      topic  = google_pubsub_topic.dead_letter.id
      prefix = "dead-letter/"
    }
  }
}

resource "google_pubsub_subscription" "archive" {
  for_each = local.archive_subscriptions

  name  = "${var.topic_name}-archive-${each.key}"
  topic = each.value.topic

  # A file stays open for up to max_duration, which may not exceed the ack deadline.
  ack_deadline_seconds = 300

  cloud_storage_config {
    bucket                   = google_storage_bucket.archive.name
    filename_prefix          = each.value.prefix
    filename_datetime_format = "YYYY-MM-DD/hh_mm_ssZ"
    filename_suffix          = ".ndjson"
    max_duration             = "300s"
    max_bytes                = 256 * 1024 * 1024
  }

  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_storage_bucket_iam_member.pubsub_writes_archive,
    google_storage_bucket_iam_member.pubsub_reads_archive_metadata,
  ]
}

# IAM of the Pub/Sub service agent, which runs both kinds of subscriptions.

resource "google_pubsub_topic_iam_member" "pubsub_publishes_dead_letters" {
  topic  = google_pubsub_topic.dead_letter.id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_service_agent
}

# Dead lettering also needs the agent to acknowledge the message it forwards.
resource "google_pubsub_subscription_iam_member" "pubsub_acknowledges_dead_letters" {
  subscription = google_pubsub_subscription.bigquery.id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# IAM of the collector: publish to its two topics, nothing else in Pub/Sub.

resource "google_pubsub_topic_iam_member" "collector_publishes_events" {
  topic  = google_pubsub_topic.events.id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_service_account.collector.email}"
}

resource "google_pubsub_topic_iam_member" "collector_publishes_invalid" {
  topic  = google_pubsub_topic.invalid.id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_service_account.collector.email}"
}
