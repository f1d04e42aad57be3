# The collector on Cloud Run, its service account, the secret with its keys file
# and the repository for its image.

resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:The repository contains a public open-source image, so Google-managed encryption is enough.
  location      = var.region
  repository_id = var.service_name
  format        = "DOCKER"
  description   = "Images of the collector service"

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "collector" {
  account_id   = "${var.service_name}-run"
  display_name = "Collector on Cloud Run: publishes events and reads its keys file"
}

# The keys file is a JSON list of key ids, kinds, origins and SHA-256 hashes made
# by `collector keys create`. Its versions are added with
# `gcloud secrets versions add`, never by Terraform, so no key file reaches the
# Terraform state.
resource "google_secret_manager_secret" "keys" {
  secret_id = "${var.service_name}-keys"

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

resource "google_secret_manager_secret_iam_member" "collector_reads_keys" {
  secret_id = google_secret_manager_secret.keys.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.collector.email}"
}

locals {
  keys_mount_path = "/secrets/keys"

  # Every variable here is a field of collector.settings.Settings, and
  # tests/test_deploy.py fails on a COLLECTOR_ name that is not. PORT is set by
  # Cloud Run and read by the collector when COLLECTOR_PORT is absent.
  base_env = {
    COLLECTOR_HOST                 = "0.0.0.0"
    COLLECTOR_SINK                 = "pubsub"
    COLLECTOR_PUBSUB_TOPIC         = google_pubsub_topic.events.id
    COLLECTOR_PUBSUB_INVALID_TOPIC = google_pubsub_topic.invalid.id
    COLLECTOR_KEYS_FILE            = "${local.keys_mount_path}/keys.json"
    COLLECTOR_RATE_LIMIT_STORAGE   = var.rate_limit_storage
    # Google's external Application Load Balancer appends "<client>,<balancer>"
    # to X-Forwarded-For, so the client is the second entry from the right.
    COLLECTOR_TRUSTED_PROXY_HOPS = "2"
    COLLECTOR_LOG_LEVEL          = var.log_level
  }

  collector_env = merge(local.base_env, var.extra_env)
}

resource "google_cloud_run_v2_service" "collector" {
  name     = var.service_name
  location = var.region

  # Only the load balancer reaches the service, so every request passes Cloud
  # Armor. The service is public behind it: browsers carry no Google identity.
  ingress              = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
  invoker_iam_disabled = true
  deletion_protection  = var.deletion_protection

  template {
    service_account                  = google_service_account.collector.email
    max_instance_request_concurrency = var.concurrency
    timeout                          = "30s"
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    dynamic "vpc_access" {
      for_each = var.vpc_network == null ? [] : [1]
      content {
        egress = "PRIVATE_RANGES_ONLY"
        network_interfaces {
          network    = var.vpc_network
          subnetwork = var.vpc_subnetwork
        }
      }
    }

    volumes {
      name = "keys"
      secret {
        secret       = google_secret_manager_secret.keys.secret_id
        default_mode = 292 # 0444: the image runs as a non-root user
        items {
          version = var.keys_secret_version
          path    = "keys.json"
        }
      }
    }

    containers {
      image = var.image

      ports {
        name           = "http1"
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        # Request-based billing: CPU is throttled outside requests. A request
        # returns only after Pub/Sub confirmed its events, so no accepted event
        # depends on CPU after the response.
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.collector_env
        content {
          name  = env.key
          value = env.value
        }
      }

      volume_mounts {
        name       = "keys"
        mount_path = local.keys_mount_path
      }

      # Ready once the sink can confirm events. A cold start gets 30 x 2 s.
      startup_probe {
        period_seconds    = 2
        timeout_seconds   = 2
        failure_threshold = 30
        http_get {
          path = "/readyz"
          port = 8080
        }
      }

      liveness_probe {
        period_seconds    = 15
        timeout_seconds   = 3
        failure_threshold = 3
        http_get {
          path = "/healthz"
          port = 8080
        }
      }
    }
  }

  depends_on = [
    google_secret_manager_secret_iam_member.collector_reads_keys,
    google_pubsub_topic_iam_member.collector_publishes_events,
    google_pubsub_topic_iam_member.collector_publishes_invalid,
  ]
}
