# Store tests against a private MariaDB go here.
