"""ecomdream: personalised image models as a service."""
