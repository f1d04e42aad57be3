# Scheduled queries that rebuild staging and marts from the raw table. The SQL is
# read from bigquery/staging and bigquery/marts with file(), so the files in the
# repository are what runs.
# They run as a dedicated service account that can read raw and write staging
# and marts, and nothing else.

resource "google_service_account" "scheduler" {
  account_id   = "${var.service_name}-bq-scheduler"
  display_name = "Runs the staging and marts scheduled queries"
}

resource "google_project_iam_member" "scheduler_runs_jobs" {
  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_bigquery_dataset_iam_member" "scheduler_reads_raw" {
  dataset_id = google_bigquery_dataset.this["raw"].dataset_id
  role       = "roles/bigquery.dataViewer"
  member     = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_bigquery_dataset_iam_member" "scheduler_writes" {
  for_each = toset(["staging", "marts"])

  dataset_id = google_bigquery_dataset.this[each.key].dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = "serviceAccount:${google_service_account.scheduler.email}"
}

# The BigQuery Data Transfer service agent mints short-lived tokens of the
# scheduler account to run the queries as that account.
resource "google_service_account_iam_member" "transfer_agent_mints_scheduler_tokens" {
  service_account_id = google_service_account.scheduler.name
  role               = "roles/iam.serviceAccountShortTermTokenMinter"
  member             = local.transfer_service_agent
}

locals {
  sql_root = "${path.module}/../../bigquery"

  # The staging SQL takes the query parameter @window_start (a DATE): rows
  # received on or after it are rebuilt. Scheduled queries supply only @run_time
  # and @run_date, so the parameter is replaced by a date relative to the run.
  window_start = "date_sub(@run_date, interval ${var.staging_window_days} day)"

  # One scheduled query per SQL file, found with fileset(), so a new mart file is
  # scheduled without editing this module.
  scheduled_queries = merge(
    {
      for name in fileset("${local.sql_root}/staging", "*.sql") :
      "staging-${trimsuffix(name, ".sql")}" => {
        schedule = var.staging_schedule
        query    = replace(file("${local.sql_root}/staging/${name}"), "@window_start", local.window_start)
      }
    },
    {
      for name in fileset("${local.sql_root}/marts", "*.sql") :
      "marts-${trimsuffix(name, ".sql")}" => {
        schedule = var.marts_schedule
        query    = file("${local.sql_root}/marts/${name}")
      }
    },
  )
}

# The SQL files are scripts (DDL and DML), so no destination table is set.
resource "google_bigquery_data_transfer_config" "this" {
  for_each = local.scheduled_queries

  display_name         = "${var.service_name} ${each.key}"
  location             = var.bigquery_location
  data_source_id       = "scheduled_query"
  schedule             = each.value.schedule
  service_account_name = google_service_account.scheduler.email

  params = {
    query = each.value.query
  }

  depends_on = [
    google_project_iam_member.scheduler_runs_jobs,
    google_bigquery_dataset_iam_member.scheduler_reads_raw,
    google_bigquery_dataset_iam_member.scheduler_writes,
    google_service_account_iam_member.transfer_agent_mints_scheduler_tokens,
  ]
}
