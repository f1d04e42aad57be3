terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source = "hashicorp/google"
      # invoker_iam_disabled on google_cloud_run_v2_service needs a 6.x release.
      # NOTE: this module has not been run through `terraform validate` against a
      # downloaded provider (see README.md). The arguments were checked against the
      # provider's documentation.
      version = ">= 6.14, < 8.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = var.labels
}
