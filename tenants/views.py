from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from tenants.forms import ApiTokenForm
from tenants.models import ApiToken
from tenants.services import api_token_create, api_token_revoke


def _tokens(user):
    return ApiToken.objects.filter(user=user).select_related("tenant").order_by("revoked_at", "-created_at")


@login_required
def profile(request):
    form = ApiTokenForm(user=request.user)
    return render(request, "tenants/profile.html", {"form": form, "tokens": _tokens(request.user)})


@login_required
@require_POST
def token_create(request):
    form = ApiTokenForm(request.POST, user=request.user)
    created = None
    if form.is_valid():
        try:
            token, plaintext = api_token_create(
                user=request.user,
                name=form.cleaned_data["name"],
                expires_at=form.expires_at(),
                tenant=form.cleaned_data.get("tenant"),
            )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            created = {"token": token, "plaintext": plaintext}
            form = ApiTokenForm(user=request.user)
    context = {"form": form, "tokens": _tokens(request.user), "created": created}
    if request.htmx:
        return render(request, "tenants/partials/tokens.html", context)
    if created:
        # Without htmx the plaintext can only be shown on this response, never again.
        return render(request, "tenants/profile.html", context)
    return render(request, "tenants/profile.html", context, status=400)


@login_required
@require_POST
def token_revoke(request, pk: int):
    # A user's own tokens only: anyone else's token is a 404, like a missing one.
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    api_token_revoke(token=token, acting_user=request.user)
    if request.htmx:
        return render(
            request,
            "tenants/partials/tokens.html",
            {"form": ApiTokenForm(user=request.user), "tokens": _tokens(request.user)},
        )
    messages.success(request, f"Token “{token.name}” revoked.")
    return redirect("tenants:profile")
