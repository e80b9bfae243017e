"""``manage.py partners set-endpoint|rotate-secret``: a partner's endpoint and secrets."""

from django.core.management.base import BaseCommand, CommandError

from records.models import Partner

from ... import services


class Command(BaseCommand):
    help = "Manage a partner's webhook endpoint and signing secrets."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        endpoint = actions.add_parser("set-endpoint", help="set the partner's webhook URL")
        endpoint.add_argument("partner_id")
        endpoint.add_argument("url")
        rotate = actions.add_parser(
            "rotate-secret",
            help="new signing secret, printed once; the old one signs for 24 h more",
        )
        rotate.add_argument("partner_id")

    def handle(self, action, partner_id, **options):
        try:
            partner = Partner.objects.get(partner_id=partner_id)
        except Partner.DoesNotExist:
            raise CommandError(f"no partner {partner_id}") from None
        if action == "set-endpoint":
            url = options["url"]
            if not url.startswith(("https://", "http://")):
                raise CommandError("the endpoint must be an http(s) URL")
            services.set_endpoint(partner, url)
            self.stdout.write(f"{partner_id} endpoint set to {url}")
        else:
            value = services.rotate_secret(partner)
            self.stdout.write(value)
            self.stderr.write(
                "This secret is shown once. Give it to the partner; the previous one keeps "
                "signing replays for 24 hours."
            )
