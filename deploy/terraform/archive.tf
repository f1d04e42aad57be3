# Bucket of the Cloud Storage subscriptions: raw NDJSON under events/, rejected
# events under invalid/ and rows BigQuery refused under dead-letter/.

resource "google_storage_bucket" "archive" {
  #checkov:skip=CKV_GCP_62:Access to the archive is recorded by Cloud Audit Logs, and a second bucket for usage logs adds cost without a reader.
  #checkov:skip=CKV_GCP_78:Every archive object is written once under a unique name, so versioning would only keep copies of what the lifecycle rule deletes.
  name     = "${var.project_id}-${var.topic_name}-archive"
  location = var.region

  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  lifecycle_rule {
    condition {
      age = var.archive_nearline_after_days
    }
    action {
      type          = "SetStorageClass"
      storage_class = "NEARLINE"
    }
  }

  lifecycle_rule {
    condition {
      age = var.archive_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.enabled]
}

# A Cloud Storage subscription needs to create objects and read the bucket's metadata.
resource "google_storage_bucket_iam_member" "pubsub_writes_archive" {
  bucket = google_storage_bucket.archive.name
  role   = "roles/storage.objectCreator"
  member = local.pubsub_service_agent
}

resource "google_storage_bucket_iam_member" "pubsub_reads_archive_metadata" {
  bucket = google_storage_bucket.archive.name
  role   = "roles/storage.legacyBucketReader"
  member = local.pubsub_service_agent
}
