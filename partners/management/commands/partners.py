"""``manage.py partners``: list, show, create; a partner's endpoint and secrets.

The same service functions as the /partners/ pages: every change is audited
(actor ``cli``) with the ``--reason`` given.
"""

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from lib.formats import rfc3339
from records.models import Partner

from ... import services
from ...models import ApiKey, Endpoint, Entitlement, Mode, Profile, SigningSecret


class Command(BaseCommand):
    help = "List, show and create partners; set a partner's webhook endpoint and signing secrets."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        actions.add_parser("list", help="every partner: mode, status, keys, endpoint host")
        show = actions.add_parser("show", help="one partner, as its page shows it")
        show.add_argument("partner_id")
        create = actions.add_parser("create", help="a partner 0Pools may not have sent yet")
        create.add_argument("partner_id")
        create.add_argument("--name", default="")
        create.add_argument("--mode", choices=Mode.values, required=True)
        create.add_argument("--tier", choices=Profile.Tier.values, default=Profile.Tier.STANDARD)
        create.add_argument("--verified", action="store_true")
        endpoint = actions.add_parser("set-endpoint", help="set the partner's webhook URL")
        endpoint.add_argument("partner_id")
        endpoint.add_argument("url")
        rotate = actions.add_parser(
            "rotate-secret",
            help="new signing secret, printed once; the old one signs for 24 h more",
        )
        rotate.add_argument("partner_id")
        rotate.add_argument("--overlap", choices=list(services.OVERLAPS), default="24h")
        actions.add_parser(
            "reencrypt",
            help="re-encrypt every signing secret under the first OPSPANEL_SECRET_KEYS key",
        )
        for sub in (create, endpoint, rotate):
            sub.add_argument("--reason", default="", help="goes in the audit log")

    def handle(self, action, **options):
        try:
            if action == "list":
                return self.list()
            if action == "reencrypt":
                count = services.reencrypt_secrets()
                self.stdout.write(f"re-encrypted {count} signing secrets")
                return
            if action == "create":
                partner = services.create_partner(
                    options["partner_id"],
                    options["name"],
                    options["mode"],
                    tier=options["tier"],
                    verified=options["verified"],
                    reason=options["reason"],
                )
                self.stdout.write(f"created {partner.partner_id}")
                return
            partner = self.partner(options["partner_id"])
            if action == "show":
                return self.show(partner)
            if action == "set-endpoint":
                services.set_endpoint(partner, options["url"], reason=options["reason"])
                self.stdout.write(f"{partner.partner_id} endpoint set to {options['url']}")
            else:
                value = services.rotate_secret(
                    partner, overlap=options["overlap"], reason=options["reason"]
                )
                self.stdout.write(value)
                self.stderr.write(
                    "This secret is shown once. Give it to the partner; the previous one keeps "
                    f"signing replays for {options['overlap']}."
                )
        except services.Refused as refused:
            raise CommandError(str(refused)) from None

    def partner(self, partner_id):
        try:
            return Partner.objects.get(partner_id=partner_id)
        except Partner.DoesNotExist:
            raise CommandError(f"no partner {partner_id}") from None

    def list(self):
        now = timezone.now()
        for partner in Partner.objects.select_related("endpoint", "profile"):
            profile = services.profile_of(partner)
            usable = ApiKey.objects.filter(partner=partner).usable(now).count()
            endpoint = getattr(partner, "endpoint", None)
            self.stdout.write(
                f"{partner.partner_id}\t{profile.mode}\t{profile.status}\t"
                f"{'verified' if profile.verified else 'unverified'}\t{profile.tier}\t"
                f"{usable} keys\t{services.host_of(endpoint.url) if endpoint else '-'}"
            )

    def show(self, partner):
        now = timezone.now()
        profile = services.profile_of(partner)
        endpoint = Endpoint.objects.filter(partner=partner).first()
        write = self.stdout.write
        write(f"{partner.partner_id}  {partner.name}")
        write(
            f"  mode {profile.mode}, {profile.status}, tier {profile.tier}, "
            f"{'verified' if profile.verified else 'not verified'}"
        )
        write(f"  endpoint {endpoint.url if endpoint else '(none)'}")
        for entitlement in Entitlement.objects.filter(partner=partner):
            write(
                f"  entitled {entitlement.pool_id} {entitlement.side}: per quote "
                f"{entitlement.max_per_quote or 'no limit'}, per day "
                f"{entitlement.max_per_day or 'no limit'}"
            )
        for secret in SigningSecret.objects.active(now).filter(partner=partner):
            retires = f" retires {rfc3339(secret.retires_at)}" if secret.retires_at else ""
            write(f"  secret {secret.fingerprint}{retires}")
        for key in ApiKey.objects.filter(partner=partner):
            expires = f", expires {rfc3339(key.expires_at)}" if key.expires_at else ""
            used = rfc3339(key.last_used_at) or "never"
            write(f"  key {key.masked} {key.state(now)}{expires}, last used {used}")
