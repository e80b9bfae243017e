from django import template

from actions import permissions

register = template.Library()


@register.filter
def can(user, action):
    """``{% if user|can:"trade.repoll" %}``: the permission matrix, in templates."""
    return permissions.can(user, action)
