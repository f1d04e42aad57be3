# APIs this module uses. The docs enable the same list with gcloud before the first
# apply, because Terraform needs some of them to plan. Declaring them here keeps
# them enabled. disable_on_destroy stays false so `terraform destroy` never turns
# off an API that other workloads of the project may use.
locals {
  services = [
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "bigquerydatatransfer.googleapis.com",
    "compute.googleapis.com",
    "iam.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ]
}

resource "google_project_service" "enabled" {
  for_each = toset(local.services)

  service            = each.value
  disable_on_destroy = false
}

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  # Service agents that Google creates for the project. Both are created when
  # their API is first used, so docs/deploy.md creates them up front with
  # `gcloud beta services identity create` so the IAM grants below can refer to them.
  pubsub_service_agent   = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  transfer_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-bigquerydatatransfer.iam.gserviceaccount.com"
}
