from django import template

from accounts import permissions

register = template.Library()


@register.filter
def can(user, what):
    """``{% if user|can:"trade.repoll" %}``: the permission matrix, in templates."""
    return permissions.can(user, what)
