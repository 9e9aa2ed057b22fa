// API errors are {code, message, field}: a field the form has gets the message under it,
// anything else becomes a message at the top of the page.
import type { FormInstance } from 'antd';
import { message } from 'antd';
import { ApiError } from '../api';

/** `fields`: the form's field names; an API field `body.password` or `password` lands on `password`. */
export function showApiError(err: unknown, describe: (err: ApiError) => string, form?: FormInstance, fields: string[] = []) {
  if (!(err instanceof ApiError)) {
    message.error(String((err as Error)?.message ?? err));
    return;
  }
  const text = describe(err);
  if (form && err.field) {
    const name = err.field.split('.').pop()!;
    if (fields.includes(name)) {
      form.setFields([{ name, errors: [text] }]);
      return;
    }
  }
  message.error(text);
}
