// Every action on an order asks why: the reason goes to the event log and the audit log.
import { Form, Input, Modal } from 'antd';
import { useState } from 'react';
import { useI18n } from '../i18n';
import { showApiError } from './formErrors';
import { errorText } from './ErrorState';

export function ReasonModal({ open, title, onCancel, onSubmit, danger, extra }: {
  open: boolean;
  title: string;
  onCancel: () => void;
  onSubmit: (reason: string) => Promise<void>;
  danger?: boolean;
  extra?: React.ReactNode;
}) {
  const { t, label } = useI18n();
  const [form] = Form.useForm();
  const [busy, setBusy] = useState(false);
  return (
    <Modal
      open={open}
      title={title}
      okText={t('action.confirm')}
      cancelText={t('action.cancel')}
      okButtonProps={{ danger, loading: busy, 'data-testid': 'reason-ok' } as any}
      onCancel={onCancel}
      destroyOnHidden
      onOk={async () => {
        const values = await form.validateFields().catch(() => null);  // the form shows what is missing
        if (!values) return;
        const { reason } = values;
        setBusy(true);
        try {
          await onSubmit(reason);
          form.resetFields();
        } catch (err) {
          showApiError(err, (e) => errorText(t, label, e), form, ['reason']);
        } finally {
          setBusy(false);
        }
      }}
    >
      {extra}
      <Form form={form} layout="vertical" preserve={false}>
        <Form.Item name="reason" label={t('field.reason')} rules={[{ required: true, whitespace: true, message: t('validation.reasonRequired') }]}>
          <Input.TextArea rows={3} placeholder={t('placeholder.reason')} data-testid="reason-input" />
        </Form.Item>
      </Form>
    </Modal>
  );
}
