output "load_balancer_ip" {
  description = "Address for the domain's DNS A record."
  value       = google_compute_global_address.collector.address
}

output "certificate_name" {
  description = "Managed certificate, for `gcloud compute ssl-certificates describe`."
  value       = google_compute_managed_ssl_certificate.collector.name
}

output "collect_url" {
  description = "URL the tracker posts events to."
  value       = "https://${var.domain}/collect"
}

output "service_name" {
  description = "Cloud Run service, for gcloud run commands."
  value       = google_cloud_run_v2_service.collector.name
}

output "service_account" {
  description = "Service account the collector runs as, and the serviceAccountName of deploy/cloudrun/service.yaml."
  value       = google_service_account.collector.email
}

output "image_repository" {
  description = "Artifact Registry path to push collector images to."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "keys_secret" {
  description = "Secret Manager secret that contains the keys file."
  value       = google_secret_manager_secret.keys.secret_id
}

output "events_topic" {
  description = "Value of COLLECTOR_PUBSUB_TOPIC."
  value       = google_pubsub_topic.events.id
}

output "invalid_topic" {
  description = "Value of COLLECTOR_PUBSUB_INVALID_TOPIC."
  value       = google_pubsub_topic.invalid.id
}

output "raw_table" {
  description = "Raw events table that the BigQuery subscription writes into."
  value       = "${var.project_id}.${google_bigquery_table.raw_events.dataset_id}.${google_bigquery_table.raw_events.table_id}"
}

output "archive_bucket" {
  description = "Bucket of the NDJSON archive (events/, invalid/, dead-letter/)."
  value       = google_storage_bucket.archive.name
}
